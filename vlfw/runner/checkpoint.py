"""Checkpoints: atomic writes, the `last` pointer, best/keep-last bookkeeping, RNG states,
weights-only loading, pretrained initialisation with key renames, safetensors export.

Everything stored is a tensor or a primitive container so that `torch.load(weights_only=True)`
reads it: numpy's RNG state becomes a tensor, the config a YAML string.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import re
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from vlfw.errors import CheckpointError, OutputError

log = logging.getLogger("vlfw.runner")

CHECKPOINT_DIR = "checkpoints"
LAST_POINTER = "last"
BEST_FILE = "best.pt"
_UPDATE_FILE = re.compile(r"^update_(\d+)\.pt$")
_TEMPORARY = re.compile(r"^\..+\.tmp\.(\d+)$")  # atomic_write's temporary files: .<name>.tmp.<pid>


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- atomic files ------------------------------------------------------------------------------
def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some filesystems do not allow opening directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def describe_os_error(error: OSError) -> str:
    """'No space left on device (ENOSPC)': the cause of a failed file operation, without the path."""
    name = errno.errorcode.get(error.errno or 0)
    text = error.strerror or str(error) or type(error).__name__
    return f"{text} ({name})" if name else text


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Write `path` through `write(file)` so that readers see the old file or the whole new one.
    An OSError (full disk, read-only folder, ...) is an OutputError naming `path` and the cause;
    the old file, if any, is left as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, mode) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            tmp.unlink()
        except OSError:  # never created, or the folder went read-only
            pass
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write {path}: {describe_os_error(exc)}") from None
        raise
    _fsync_directory(path.parent)


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save `obj` to `path` atomically (temp file, fsync, rename, fsync the directory)."""
    atomic_write(path, lambda handle: torch.save(obj, handle))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda handle: handle.write(text), mode="w")


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint with weights_only=True; any failure is a CheckpointError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: it is corrupt or not a checkpoint "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not a dict of states")
    return state


# -- RNG ---------------------------------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    """The process's RNG states (python, numpy, torch CPU, CUDA), as tensors and primitives."""
    version, mt_state, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state = {
        "python": {"version": version, "state": list(mt_state), "gauss": gauss},
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                  "position": int(position), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss"]))
    numpy = state["numpy"]
    np.random.set_state((numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["position"],
                         numpy["has_gauss"], numpy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- the checkpoint directory ------------------------------------------------------------------
class CheckpointManager:
    """`<save_dir>/checkpoints/`: update_<N>.pt files, the `last` pointer, best.pt."""

    def __init__(self, save_dir: str | os.PathLike, keep_last: int = 2) -> None:
        self.directory = Path(save_dir) / CHECKPOINT_DIR
        self.keep_last = int(keep_last) if keep_last is not None else 0

    @property
    def best_path(self) -> Path:
        return self.directory / BEST_FILE

    def update_path(self, update: int) -> Path:
        return self.directory / f"update_{update}.pt"

    def last_path(self) -> Path | None:
        """The file the `last` pointer names, or None when no checkpoint was written yet.

        The pointer may only hold a plain `update_<N>.pt` name: a path (`../x.pt`, `/abs.pt`,
        `sub/x.pt`) would make a resume load a file from outside the run's checkpoints folder.
        """
        pointer = self.directory / LAST_POINTER
        if not pointer.is_file():
            return None
        with open(pointer, "rb") as handle:
            raw = handle.read(4097)
        name = raw[:4096].decode("utf-8", errors="replace").strip()
        if not name:
            raise CheckpointError(f"the checkpoint pointer {pointer} is empty")
        if len(raw) > 4096 or not _UPDATE_FILE.match(name):
            shown = name if len(name) <= 80 else name[:77] + "..."
            raise CheckpointError(f"the checkpoint pointer {pointer} holds {shown!r}, not the name of a checkpoint "
                                  f"in {self.directory} (update_<N>.pt, no path); delete the pointer or write such a name in it")
        return self.directory / name

    def save(self, state: dict[str, Any], update: int) -> Path:
        """Write update_<update>.pt, then move the `last` pointer to it, then prune old files. A
        failed write is one CheckpointError; the previous checkpoint and the pointer stay as they were."""
        path = self.update_path(update)
        previous = self._pointer_text()
        try:
            atomic_save(state, path)
            atomic_write_text(self.directory / LAST_POINTER, path.name + "\n")
        except OutputError as exc:
            kept = (f"the 'last' pointer still names {previous}, which is unchanged" if previous
                    else "no earlier checkpoint of this run exists")
            raise CheckpointError(f"{exc}: the checkpoint of update {update} is not saved; {kept}. Free space "
                                  f"or fix the permissions of {self.directory}, then resume with "
                                  "checkpoint.resume=auto") from None
        self._prune(keep=path)
        return path

    def _pointer_text(self) -> str | None:
        try:
            return (self.directory / LAST_POINTER).read_text(errors="replace").strip()[:80] or None
        except OSError:
            return None

    def remove_stale_temporaries(self) -> list[Path]:
        """Delete temporary files of checkpoint writers that died mid-write (their process is gone)."""
        removed = []
        if not self.directory.is_dir():
            return removed
        for path in self.directory.iterdir():
            match = _TEMPORARY.match(path.name)
            if match and not _process_alive(int(match.group(1))):
                path.unlink(missing_ok=True)
                removed.append(path)
        if removed:
            log.info("removed %d temporary file(s) of interrupted checkpoint writes in %s", len(removed), self.directory)
        return removed

    def save_best(self, state: dict[str, Any]) -> Path:
        existed = self.best_path.is_file()
        try:
            atomic_save(state, self.best_path)
        except OutputError as exc:
            kept = "the previous best.pt is unchanged" if existed else "there is no best.pt yet"
            raise CheckpointError(f"{exc}: the best checkpoint is not saved; {kept}. Free space or fix the "
                                  f"permissions of {self.directory}, then resume with checkpoint.resume=auto") from None
        return self.best_path

    def _prune(self, keep: Path) -> None:
        if self.keep_last <= 0:
            return
        found = sorted((int(m.group(1)), p) for p in self.directory.iterdir()
                       if (m := _UPDATE_FILE.match(p.name)))
        for _, path in found[:-self.keep_last]:
            if path != keep:
                path.unlink(missing_ok=True)


# -- the run directory -------------------------------------------------------------------------
def check_save_dir(config: Any, context: Any) -> None:
    """A training run never mixes with an earlier run in its save_dir: without checkpoint.resume
    (true, or auto: resume when the directory holds a checkpoint) a save_dir holding a run's
    checkpoints or log is refused. Removes stale checkpoint temporaries."""
    save_dir = Path(str(config.save_dir))
    if save_dir.exists() and not save_dir.is_dir():
        raise CheckpointError(f"save_dir {save_dir} is a file, not a directory; choose another save_dir")
    if "train" not in str(config.run_type).split("_"):
        return
    manager = CheckpointManager(save_dir)
    if context.is_main:
        manager.remove_stale_temporaries()
    checkpoint = config.checkpoint
    if checkpoint.resume_file:
        return
    if str(checkpoint.resume) == "auto":
        checkpoint.resume = (manager.directory / LAST_POINTER).is_file()
        if checkpoint.resume:
            log.info("checkpoint.resume=auto: continuing the run in %s", save_dir)
        return
    if checkpoint.resume:
        return
    earlier = [p for p in (manager.directory / LAST_POINTER, save_dir / "train_log.jsonl") if p.exists()]
    if earlier:
        raise CheckpointError(
            f"save_dir {save_dir} already holds a run ({', '.join(str(p.relative_to(save_dir)) for p in earlier)}); "
            "continue it with checkpoint.resume=true (or auto), or choose a new save_dir")


def checkpoint_origin(state: Mapping[str, Any]) -> tuple[Any, list[str]] | None:
    """(model, datasets) of the run that wrote a vlfw checkpoint, from its config; None if unknown."""
    import yaml

    try:
        saved = yaml.safe_load(state.get("config") or "") or {}
    except yaml.YAMLError:
        saved = {}
    if not isinstance(saved, dict) or not saved:
        return None
    return saved.get("model"), [str(d) for d in (saved.get("datasets") or [])]


def check_compatible(state: Mapping[str, Any], config: Any, path: str | os.PathLike, action: str = "resume from") -> None:
    """A resumed (or evaluated) checkpoint must come from the same model and datasets as this run."""
    theirs = checkpoint_origin(state)
    ours = (str(config.model), [str(d) for d in config.datasets])
    if theirs is not None and theirs != ours:
        raise CheckpointError(f"cannot {action} {path}: it is a checkpoint of model {theirs[0]!r} on datasets "
                              f"{theirs[1]}, this run is model {ours[0]!r} on {ours[1]}")


# -- model and optimizer state (torch.distributed.checkpoint.state_dict) -------------------------
# One code path for a plain module, DDP and FSDP: full (unsharded) states on the CPU. Under several
# ranks only rank 0 receives them (it is the one that writes); loading takes the full state on
# every rank.
_FULL_ON_CPU = StateDictOptions(full_state_dict=True, cpu_offload=True)
_FULL = StateDictOptions(full_state_dict=True)
_FULL_LENIENT = StateDictOptions(full_state_dict=True, strict=False)


def model_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's full state dict on the CPU (collective under FSDP: every rank calls it)."""
    return get_model_state_dict(model, options=_FULL_ON_CPU)


def load_model_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    set_model_state_dict(model, dict(state), options=_FULL)


def optimizer_state_dict(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer state keyed by parameter names (collective under FSDP)."""
    return get_optimizer_state_dict(model, optimizer, options=_FULL_ON_CPU)


IMPLEMENTATION_KEYS = ("fused", "foreach")


def load_optimizer_state_dict(model: nn.Module, optimizer: torch.optim.Optimizer, state: Mapping[str, Any]) -> None:
    """Parameters that never had a gradient (the head of a dataset not drawn yet) have no optimizer
    state in the checkpoint. set_optimizer_state_dict initialises one for them (step 1, zero
    moments), which is not what a fresh state is (step 0): those are removed again, so the
    resumed run continues exactly. The implementation switches (`fused`, `foreach`) stay those
    of this run's config: a checkpoint written with another would otherwise bring its own."""
    switches = [{key: group[key] for key in IMPLEMENTATION_KEYS if key in group} for group in optimizer.param_groups]
    set_optimizer_state_dict(model, optimizer, dict(state), options=_FULL_LENIENT)
    for group, kept in zip(optimizer.param_groups, switches):
        group.update(kept)
    saved = set((state.get("state") or {}).keys())
    for name, parameter in model.named_parameters():
        if name not in saved:
            optimizer.state.pop(parameter, None)


def non_finite_tensors(state: Mapping[str, Any]) -> list[str]:
    """Names of the floating-point tensors of a state dict holding NaN or Inf."""
    return [name for name, value in state.items()
            if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all())]


# -- model weights -----------------------------------------------------------------------------
def rename_prefixes(state: Mapping[str, torch.Tensor], key_map: Mapping[str, str]) -> dict[str, torch.Tensor]:
    """Replace the longest matching old prefix of every key by its new prefix."""
    ordered = sorted(((str(k), str(v)) for k, v in (key_map or {}).items()), key=lambda kv: -len(kv[0]))
    renamed = {}
    for key, value in state.items():
        for old, new in ordered:
            if key.startswith(old):
                key = new + key[len(old):]
                break
        renamed[key] = value
    return renamed


def extract_model_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Model weights from a vlfw checkpoint, a plain state dict or a .safetensors file."""
    return _model_weights(path)[0]


def _model_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], Mapping[str, Any] | None]:
    """(model weights, the whole vlfw checkpoint or None) of a checkpoint, state dict or .safetensors file."""
    path = Path(path)
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise CheckpointError(f"pretrained weights not found: {path}")
        from safetensors.torch import load_file

        try:
            return load_file(str(path)), None
        except Exception as exc:
            raise CheckpointError(f"cannot read safetensors file {path}: {exc}") from None
    whole = load_checkpoint(path)
    state = whole
    if "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} holds no model weights (expected a 'model' state dict)")
    return dict(state), whole


def _listed(keys: list[str]) -> str:
    return ", ".join(keys[:3]) + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")


def load_model_weights(model: nn.Module, path: str | os.PathLike, config: Any = None) -> None:
    """The weights of `path` into `model`, every tensor by name and shape (what evaluation of a
    checkpoint needs: no silent partial load). With `config`, a vlfw checkpoint must come from the
    same model and datasets (check_compatible). Any mismatch is one CheckpointError."""
    state, whole = _model_weights(path)
    if config is not None and whole is not None:
        check_compatible(whole, config, path, action="load the weights of")
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
                  if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        origin = checkpoint_origin(whole) if whole is not None else None
        written = f" (it is a checkpoint of model {origin[0]!r} on datasets {origin[1]})" if origin else ""
        problems = [f"{what}: {_listed(keys)}" for what, keys in
                    (("missing", missing), ("unexpected", unexpected), ("other shapes", mismatched)) if keys]
        raise CheckpointError(f"the weights of {path} do not fit this run's model{written}: {'; '.join(problems)}; "
                              "evaluate a checkpoint of this model and datasets, or start from it with "
                              "checkpoint.pretrained (which loads what fits)")
    load_model_state_dict(model, state)


def load_pretrained(model: nn.Module, path: str | os.PathLike, key_map: Mapping[str, str] | None = None) -> dict[str, list[str]]:
    """Initialise `model` from another checkpoint's weights, skipping mismatched shapes.

    Renames: first `key_map` (checkpoint.pretrained_key_map), then the model's own
    `pretrained_key_map()`. Returns and logs the missing / unexpected / mismatched keys.
    """
    state = rename_prefixes(extract_model_state(path), key_map or {})
    if hasattr(model, "pretrained_key_map"):
        state = rename_prefixes(state, model.pretrained_key_map())
    own = model.state_dict()
    mismatched = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                  for k, v in state.items() if k in own and own[k].shape != v.shape]
    state = {k: v for k, v in state.items() if not (k in own and own[k].shape != v.shape)}
    result = model.load_state_dict(state, strict=False)
    report = {"missing": list(result.missing_keys), "unexpected": list(result.unexpected_keys),
              "mismatched": mismatched}
    loaded = len(state) - len(report["unexpected"])
    log.info("pretrained weights from %s: %d tensors loaded, %d missing, %d unexpected, %d shape mismatches skipped",
             path, loaded, len(report["missing"]), len(report["unexpected"]), len(mismatched))
    for kind, keys in report.items():
        if keys:
            log.info("  %s: %s", kind, ", ".join(keys[:20]) + (f" ... (+{len(keys) - 20})" if len(keys) > 20 else ""))
    return report


def export_safetensors(state: Mapping[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Write model weights (a state dict) as a safetensors file, atomically."""
    # clones: safetensors refuses tensors that share storage (tied weights) or are not contiguous
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    atomic_write(path, lambda handle: handle.write(_safetensors_bytes(tensors)))


def _safetensors_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    return save(tensors)
