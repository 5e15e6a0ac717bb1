"""Checkpoints: atomic writes, the `last` pointer, best/keep-last bookkeeping, RNG states,
weights-only loading, pretrained initialisation with key renames, safetensors export.

Everything stored is a tensor or a primitive container so that `torch.load(weights_only=True)`
reads it: numpy's RNG state becomes a tensor, the config a YAML string.
"""

from __future__ import annotations

import logging
import os
import random
import re
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from vlfw.errors import CheckpointError

log = logging.getLogger("vlfw.runner")

CHECKPOINT_DIR = "checkpoints"
LAST_POINTER = "last"
BEST_FILE = "best.pt"
_UPDATE_FILE = re.compile(r"^update_(\d+)\.pt$")


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


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Write `path` through `write(file)` so that readers see the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    try:
        with open(tmp, mode) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
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
        """The file the `last` pointer names, or None when no checkpoint was written yet."""
        pointer = self.directory / LAST_POINTER
        if not pointer.is_file():
            return None
        name = pointer.read_text(encoding="utf-8").strip()
        if not name:
            raise CheckpointError(f"the checkpoint pointer {pointer} is empty")
        return self.directory / name

    def save(self, state: dict[str, Any], update: int) -> Path:
        """Write update_<update>.pt, then move the `last` pointer to it, then prune old files."""
        path = self.update_path(update)
        atomic_save(state, path)
        atomic_write_text(self.directory / LAST_POINTER, path.name + "\n")
        self._prune(keep=path)
        return path

    def save_best(self, state: dict[str, Any]) -> Path:
        atomic_save(state, self.best_path)
        return self.best_path

    def _prune(self, keep: Path) -> None:
        if self.keep_last <= 0:
            return
        found = sorted((int(m.group(1)), p) for p in self.directory.iterdir()
                       if (m := _UPDATE_FILE.match(p.name)))
        for _, path in found[:-self.keep_last]:
            if path != keep:
                path.unlink(missing_ok=True)


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
    path = Path(path)
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise CheckpointError(f"pretrained weights not found: {path}")
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:
            raise CheckpointError(f"cannot read safetensors file {path}: {exc}") from None
    state = load_checkpoint(path)
    if "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} holds no model weights (expected a 'model' state dict)")
    return dict(state)


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
