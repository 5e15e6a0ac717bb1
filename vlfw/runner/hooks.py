"""Hooks: everything the training loop does besides the update itself.

The loop is `before_update -> run_update -> after_update`; evaluation, the best checkpoint, early
stopping, periodic checkpoints, logging, the EMA of the weights and the safetensors export are
hooks. A hook may keep state: `state_dict()` / `load_state_dict()` are saved in every checkpoint
(under its `name`) and restored on resume, so a user hook resumes like the built-in ones.

User hooks are registered in CALLBACKS and listed in `training.callbacks` (names, or
`{type, params}` mappings); they run after the built-in hooks and before the checkpoint and export
hooks, in list order, on every rank.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from typing import TYPE_CHECKING, Any, Iterator, Mapping

import torch
from tqdm.auto import tqdm

from vlfw.distributed import all_reduce_sum
from vlfw.errors import ConfigError
from vlfw.registry import CALLBACKS
from vlfw.runner.logging import peak_memory_mb

if TYPE_CHECKING:  # pragma: no cover
    from vlfw.runner.step import UpdateResult
    from vlfw.runner.trainer import Trainer

log = logging.getLogger("vlfw.runner")


class Hook:
    """Override any of the calls; all run on every rank. State must be tensors and primitives
    (checkpoints are read with weights_only=True)."""

    name: str = ""

    def __init__(self, **params: Any) -> None:
        self.params = params
        if not self.name:
            self.name = type(self).__name__

    def before_train(self, trainer: "Trainer") -> None:
        """After the model, optimizer and data are ready and a resume was loaded."""

    def before_update(self, trainer: "Trainer") -> None:
        """Before update `trainer.update + 1`."""

    def after_update(self, trainer: "Trainer", result: "UpdateResult") -> None:
        """After update `trainer.update` (1-based; `result.skipped` when it was skipped)."""

    def after_evaluation(self, trainer: "Trainer", split: str, metrics: Mapping[str, float]) -> None:
        """After an evaluation of `split` with its gathered metrics (keys split/dataset/metric)."""

    def after_checkpoint(self, trainer: "Trainer", path: str) -> None:
        """After a checkpoint file is complete and the `last` pointer names it (rank 0 writes it)."""

    def after_train(self, trainer: "Trainer") -> None:
        """After the training loop (before the final test)."""

    def evaluation_weights(self, trainer: "Trainer") -> contextlib.AbstractContextManager:
        """A context in which evaluation (and the best checkpoint) uses other weights (EMA)."""
        return contextlib.nullcontext()

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what `state_dict` returned."""


def build_user_hooks(specs: Any) -> list[Hook]:
    """The hooks of `training.callbacks` (registry names or {type, params})."""
    hooks = []
    for spec in specs or []:
        if isinstance(spec, str):
            hook = CALLBACKS.get(spec)()
            hook.name = spec
        else:
            hook = CALLBACKS.get(str(spec["type"]))(**dict(spec.get("params") or {}))
            hook.name = str(spec["type"])
        hooks.append(hook)
    return hooks


# -- logging -------------------------------------------------------------------------------------
class LoggingHook(Hook):
    """Train scalars every `training.log_every` updates and at the last: each key's mean over the
    updates (and ranks) of the window that produced it, so a dataset's losses average over the
    updates that drew it and a skipped update adds to no mean. The window's sums are part of the
    state, so a resume inside a window logs the same means as the uninterrupted run."""

    name = "logging"

    def __init__(self, log_every: int, progress_bar: bool) -> None:
        super().__init__()
        self.log_every = max(1, int(log_every))
        self.progress_bar = progress_bar
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self.samples = 0
        self._started = time.perf_counter()
        self._bar = None
        self._checked_weights = False

    def before_train(self, trainer: "Trainer") -> None:
        self._started = time.perf_counter()
        self._bar = tqdm(total=trainer.total_updates, initial=trainer.update, desc="train", dynamic_ncols=True,
                         disable=not (self.progress_bar and trainer.context.is_main))

    def after_update(self, trainer: "Trainer", result: "UpdateResult") -> None:
        self.samples += result.samples
        for key, value in result.parts.items():
            value = value.detach() if isinstance(value, torch.Tensor) else torch.tensor(float(value))
            self.sums[key] = self.sums[key] + value if key in self.sums else value
            self.counts[key] = self.counts.get(key, 0) + 1
        if self._bar is not None:
            self._bar.update(1)
        if trainer.update % self.log_every == 0 or trainer.update == trainer.total_updates:
            self._check_loss_weights(trainer)
            scalars = self.reduce(trainer, time.perf_counter() - self._started)
            trainer.log(scalars, kind="train")
            if self._bar is not None:
                self._bar.set_postfix(loss=f"{scalars.get('train/total_loss', float('nan')):.4f}")
            self.sums, self.counts, self.samples, self._started = {}, {}, 0, time.perf_counter()

    def _check_loss_weights(self, trainer: "Trainer") -> None:
        if self._checked_weights:
            return
        self._checked_weights = True
        unmatched = trainer.step.unmatched_loss_weights()
        if unmatched:
            name, keys = next(iter(unmatched.items()))
            terms = sorted(trainer.step.seen_terms[name])
            raise ConfigError(f"dataset_config.{name}.loss_weights names {keys}, which no loss term of {name!r} "
                              f"has; its terms are: {', '.join(terms)}")

    def reduce(self, trainer: "Trainer", elapsed: float) -> dict[str, float]:
        """The window's means over updates and ranks (every rank holds the same keys)."""
        keys = sorted(self.sums)
        device = trainer.context.device
        values = torch.stack([torch.as_tensor(self.sums[k], dtype=torch.float32, device=device).reshape(())
                              for k in keys]) if keys else torch.zeros(0, device=device)
        totals = torch.tensor([float(self.counts[k]) for k in keys], dtype=torch.float32, device=device)
        reduced = all_reduce_sum(torch.cat([values, totals]))
        means = reduced[:len(keys)] / reduced[len(keys):].clamp(min=1.0)
        scalars = {k: float(v) for k, v in zip(keys, means.tolist())}
        scalars["train/lr"] = trainer.step.used_lr  # the peak-relative lr of the last update (before multipliers)
        scalars["train/samples_per_second"] = self.samples * trainer.context.world_size / max(elapsed, 1e-9)
        scalars["train/peak_memory_mb"] = peak_memory_mb(device)
        scalars["train/skipped_updates"] = float(trainer.step.skipped_updates)
        return scalars

    def after_train(self, trainer: "Trainer") -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def state_dict(self) -> dict[str, Any]:
        return {"sums": {k: torch.as_tensor(v).detach().cpu() for k, v in self.sums.items()},
                "counts": dict(self.counts), "samples": self.samples}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.sums = {k: v for k, v in state["sums"].items()}
        self.counts = {k: int(v) for k, v in state["counts"].items()}
        self.samples = int(state["samples"])


# -- evaluation, best checkpoint, early stopping ---------------------------------------------------
class EvaluationHook(Hook):
    """Validation every `training.eval_every` updates and after the last one."""

    name = "evaluation"

    def __init__(self, eval_every: int) -> None:
        super().__init__()
        self.eval_every = int(eval_every or 0)

    def after_update(self, trainer: "Trainer", result: "UpdateResult") -> None:
        due = (self.eval_every and trainer.update % self.eval_every == 0) or trainer.update == trainer.total_updates
        if due:
            trainer.evaluate("val")


def improved(value: float, best: float | None, mode: str) -> bool:
    """Whether `value` beats `best` (NaN never does; anything beats no best yet)."""
    if math.isnan(value):
        return False
    if best is None:
        return True
    return value < best if mode == "min" else value > best


class BestCheckpointHook(Hook):
    """After each validation: when the selection metric improves, `checkpoints/best.pt`."""

    name = "best_checkpoint"

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.best_value: float | None = None
        self.best_update: int | None = None

    def after_evaluation(self, trainer: "Trainer", split: str, metrics: Mapping[str, float]) -> None:
        if split != "val":
            return
        value = trainer.selection_value(metrics)
        if improved(value, self.best_value, self.mode):
            self.best_value, self.best_update = float(value), trainer.update
            trainer.save_checkpoint(best=True)

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.best_value, "update": self.best_update}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best_value, self.best_update = state["value"], state["update"]


class EarlyStoppingHook(Hook):
    """Stops training after `patience` validations without improvement of the selection metric."""

    name = "early_stopping"

    def __init__(self, patience: int, mode: str) -> None:
        super().__init__()
        self.patience = int(patience)
        self.mode = mode
        self.best_value: float | None = None
        self.bad_evaluations = 0

    def before_train(self, trainer: "Trainer") -> None:
        if self.bad_evaluations >= self.patience:  # resumed from the checkpoint written when it stopped
            trainer.request_stop(f"early stopping: the resumed run had stopped (no improvement in "
                                 f"{self.patience} evaluations)")

    def after_evaluation(self, trainer: "Trainer", split: str, metrics: Mapping[str, float]) -> None:
        if split != "val":
            return
        value = trainer.selection_value(metrics)
        if improved(value, self.best_value, self.mode):
            self.best_value, self.bad_evaluations = float(value), 0
        else:
            self.bad_evaluations += 1
        if self.bad_evaluations >= self.patience:
            trainer.request_stop(f"early stopping at update {trainer.update}: no improvement in "
                                 f"{self.patience} evaluations")

    def state_dict(self) -> dict[str, Any]:
        return {"best_value": self.best_value, "bad_evaluations": self.bad_evaluations}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best_value, self.bad_evaluations = state["best_value"], int(state["bad_evaluations"])


# -- checkpoints and export ----------------------------------------------------------------------------
class CheckpointHook(Hook):
    """`checkpoints/update_<N>.pt` every `training.checkpoint_every` updates, after the last one,
    when training stops early, and at the end if none was written."""

    name = "checkpoint"

    def __init__(self, checkpoint_every: int) -> None:
        super().__init__()
        self.checkpoint_every = int(checkpoint_every or 0)

    def after_update(self, trainer: "Trainer", result: "UpdateResult") -> None:
        due = self.checkpoint_every and trainer.update % self.checkpoint_every == 0
        if due or trainer.update == trainer.total_updates or trainer.stop_reason:
            trainer.save_checkpoint()

    def after_train(self, trainer: "Trainer") -> None:
        if trainer.update > 0 and trainer.checkpoints.last_path() is None:
            trainer.save_checkpoint()


class ExportHook(Hook):
    """`best_model.safetensors`: the best checkpoint's weights of this run, else the final ones."""

    name = "export"

    def after_train(self, trainer: "Trainer") -> None:
        trainer.export_weights(trainer.save_dir / "best_model.safetensors")


class EMAHook(Hook):
    """An exponential moving average of the weights, `decay` per update (FIBER's fine-grained
    stage: 0.999), updated after every update that was not skipped. With `evaluate: true` the
    average is what evaluation, the best checkpoint and the export see. Floating-point parameters
    and buffers are averaged in fp32; the average is part of the checkpoint."""

    name = "ema"

    def __init__(self, decay: float, evaluate: bool = True, warmup: bool = False) -> None:
        super().__init__()
        if not 0.0 < float(decay) < 1.0:
            raise ConfigError(f"training.ema.decay must be in (0, 1), got {decay}")
        self.decay, self.evaluate, self.warmup = float(decay), bool(evaluate), bool(warmup)
        self.shadow: dict[str, torch.Tensor] = {}
        self.updates = 0

    def _tracked(self, model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
        for name, tensor in model.state_dict(keep_vars=True).items():
            if tensor.is_floating_point():
                yield name, tensor

    def before_train(self, trainer: "Trainer") -> None:
        if trainer.context.enabled and trainer.context.strategy == "fsdp":
            raise ConfigError("training.ema is not supported with distributed.strategy=fsdp yet (the average "
                              "would be of sharded weights); use ddp")
        if not self.shadow:
            self.shadow = {n: t.detach().float().clone() for n, t in self._tracked(trainer.model)}

    def current_decay(self) -> float:
        if self.warmup:  # a short average at first (1 + n) / (10 + n), as timm's ModelEmaV2 warm-up
            return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        return self.decay

    @torch.no_grad()
    def after_update(self, trainer: "Trainer", result: "UpdateResult") -> None:
        if result.skipped:
            return
        decay = self.current_decay()
        for name, tensor in self._tracked(trainer.model):
            self.shadow[name].lerp_(tensor.detach().float(), 1.0 - decay)
        self.updates += 1

    @contextlib.contextmanager
    def evaluation_weights(self, trainer: "Trainer"):
        if not self.evaluate or not self.shadow:
            yield
            return
        saved = {}
        with torch.no_grad():
            for name, tensor in self._tracked(trainer.model):
                saved[name] = tensor.detach().clone()
                tensor.copy_(self.shadow[name].to(tensor.dtype))
        try:
            yield
        finally:
            with torch.no_grad():
                for name, tensor in self._tracked(trainer.model):
                    tensor.copy_(saved[name])

    def state_dict(self) -> dict[str, Any]:
        return {"shadow": dict(self.shadow), "updates": self.updates}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.shadow = {k: v.float().clone() for k, v in state["shadow"].items()}
        self.updates = int(state["updates"])


def training_hooks(config: Any, parts: set[str], user_hooks: list[Hook]) -> list[Hook]:
    """The hooks of a training run in the order they run: the built-in ones, the user's, and last
    the checkpoint and the export, so that a checkpoint holds every hook's state after the update
    it is written at (a resume from it then runs no hook of that update twice, nor misses one)."""
    training = config.training
    hooks: list[Hook] = []
    ema = training.get("ema") or {}
    if ema.get("decay"):
        hooks.append(EMAHook(float(ema.decay), bool(ema.get("evaluate", True)), bool(ema.get("warmup", False))))
    hooks.append(LoggingHook(int(training.log_every), bool(training.progress_bar)))
    mode = str(config.evaluation.mode)
    if "val" in parts:
        hooks.append(EvaluationHook(int(training.eval_every or 0)))
        hooks.append(BestCheckpointHook(mode))
        patience = training.early_stopping.patience
        if patience:
            hooks.append(EarlyStoppingHook(int(patience), mode))
    hooks += user_hooks
    hooks.append(CheckpointHook(int(training.checkpoint_every or 0)))
    if config.checkpoint.export_safetensors:
        hooks.append(ExportHook())
    return hooks
