"""One optimizer update: micro-batches with gradient accumulation, autocast and the fp16
GradScaler, the loss terms and their weights, clipping, the non-finite policy, the step.

`UpdateStep` is the only place that calls backward and optimizer.step; the trainer's loop and
tools/bench call it through `Trainer.run_update()`.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

from vlfw.distributed import all_reduce_sum, world
from vlfw.errors import ConfigError, VlfwError
from vlfw.losses.base import Loss

log = logging.getLogger("vlfw.runner")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
LOSS_PREFIX = "loss/"


def autocast_context(device: torch.device, dtype: torch.dtype | None) -> Callable[[], Any]:
    """A factory of the autocast context of `dtype` on `device` (a null context for fp32)."""
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


def loss_terms(losses: list[tuple[str, Loss]], batch: Any, outputs: Mapping[str, torch.Tensor]
               ) -> dict[str, torch.Tensor]:
    """Every loss term of a batch, unweighted: the configured losses (by log name) and the model's
    own objectives (outputs named `loss/<name>`)."""
    terms: dict[str, torch.Tensor] = {}
    for log_name, loss in losses:
        terms[log_name] = loss(batch, outputs)
    for key, value in outputs.items():
        if key.startswith(LOSS_PREFIX) and isinstance(value, torch.Tensor):
            name = key[len(LOSS_PREFIX):]
            if name in terms:
                raise ConfigError(f"the model returns {key!r} and a configured loss is also logged as {name!r}; "
                                  "rename one of them")
            terms[name] = value
    return terms


def weighted_sum(terms: Mapping[str, torch.Tensor], weights: Mapping[str, float], dataset: str | None) -> torch.Tensor:
    """sum of weight(term) * term, a weight of 1 where `weights` (dataset_config.<d>.loss_weights)
    does not name the term."""
    total = None
    for name, value in terms.items():
        weight = weights.get(name)
        value = value if weight is None else float(weight) * value
        total = value if total is None else total + value
    if total is None:
        raise ConfigError(f"dataset {dataset!r} has no loss: configure dataset_config.{dataset}.losses or use a "
                          "model that returns loss/... outputs")
    return total


@dataclass
class UpdateResult:
    """What one update produced on this rank: the loss parts (unreduced, detached), the samples
    used, and whether the update was skipped for a non-finite loss or gradient."""

    parts: dict[str, torch.Tensor] = field(default_factory=dict)
    samples: int = 0
    skipped: bool = False
    datasets: tuple[str, ...] = ()


class UpdateStep:
    """Runs one update over the micro-batches of its datasets (see `__call__`)."""

    def __init__(self, train_model: torch.nn.Module, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: Any, losses: Mapping[str, list[tuple[str, Loss]]],
                 loss_weights: Mapping[str, Mapping[str, float]], dataset_weights: Mapping[str, float],
                 device: torch.device, precision: str = "fp32", accumulation: int = 1,
                 clip_grad_norm: float | None = None, nan_policy: str = "stop", max_consecutive_skips: int = 10,
                 max_skipped_fraction: float = 0.1, gradient_sync: Callable[[bool], Any] | None = None,
                 pin_memory: bool = False) -> None:
        self.train_model, self.model, self.optimizer, self.scheduler = train_model, model, optimizer, scheduler
        self.losses, self.loss_weights, self.dataset_weights = losses, loss_weights, dataset_weights
        self.device = device
        self.precision = precision
        self.autocast = autocast_context(device, PRECISIONS[precision])
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        self.accumulation = int(accumulation)
        self.clip_grad_norm = float(clip_grad_norm) if clip_grad_norm else None
        self.nan_policy = nan_policy
        self.max_consecutive_skips = int(max_consecutive_skips)
        self.max_skipped_fraction = float(max_skipped_fraction)
        self.gradient_sync = gradient_sync or (lambda sync: contextlib.nullcontext())
        self.pin_memory = pin_memory
        self.skipped_updates = 0
        self.consecutive_skips = 0
        self.used_lr = 0.0
        self.seen_terms: dict[str, set[str]] = {name: set() for name in losses}

    # -- the update --------------------------------------------------------------------------
    def __call__(self, iterator: Any, update: int) -> UpdateResult:
        """Update number `update + 1`: the micro-batches of `iterator.datasets_for_update(update)`."""
        names = iterator.datasets_for_update(update)
        steps = [name for _ in range(self.accumulation) for name in names]
        one_dataset = len(names) == 1
        self.optimizer.zero_grad(set_to_none=True)
        result = UpdateResult(datasets=tuple(names))
        parts = result.parts
        total_loss = torch.zeros((), device=self.device)
        for index, name in enumerate(steps):
            batch = iterator.streams[name].next().to(self.device, non_blocking=self.pin_memory)
            result.samples += batch.batch_size
            final = index == len(steps) - 1
            with self.gradient_sync(final or not one_dataset):
                with self.autocast():
                    outputs = self.train_model(batch)
                    terms = loss_terms(self.losses[name], batch, outputs)
                    loss = weighted_sum(terms, self.loss_weights.get(name, {}), name)
                loss = loss.float() * self.dataset_weights.get(name, 1.0)
                if not self._finite_everywhere(loss, f"the loss at update {update + 1} on dataset {name!r}"):
                    return self._skip(result, update)
                self.scaler.scale(loss / self.accumulation).backward()
            self.seen_terms[name].update(terms)
            for key, value in terms.items():
                full = f"train/{name}/{key}"
                parts[full] = parts.get(full, 0.0) + value.detach().float() / self.accumulation
            full = f"train/{name}/total_loss"
            parts[full] = parts.get(full, 0.0) + loss.detach() / self.accumulation
            total_loss = total_loss + loss.detach() / self.accumulation
        norm = self._gradient_norm()
        if norm is not None:
            if self.clip_grad_norm is not None:
                parts["train/grad_norm"] = norm.detach().float()
            if not self.scaler.is_enabled() and not self._finite_everywhere(
                    norm, f"the gradient norm at update {update + 1} (the loss was finite)"):
                return self._skip(result, update)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.used_lr = self._base_lr()
        self.scheduler.step()
        self.consecutive_skips = 0
        parts["train/total_loss"] = total_loss
        return result

    def _gradient_norm(self) -> torch.Tensor | None:
        """Clip (when configured) and return the total gradient norm; without clipping the norm is
        still computed (fp32/bf16) so that a non-finite gradient never reaches the weights."""
        parameters = [p for p in self.model.parameters() if p.grad is not None]
        if not parameters:
            return None
        if self.clip_grad_norm is not None:
            self.scaler.unscale_(self.optimizer)
            norm = torch.nn.utils.clip_grad_norm_(parameters, self.clip_grad_norm)
        elif self.scaler.is_enabled():
            return None  # fp16: the scaler finds inf/NaN gradients and skips the step itself
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in parameters])
        if hasattr(norm, "full_tensor"):  # a DTensor under FSDP
            norm = norm.full_tensor()
        return norm

    def _finite_everywhere(self, value: torch.Tensor, what: str) -> bool:
        """Whether `value` is finite on every rank (all ranks agree); raises under nan_policy=stop."""
        rank, size = world()
        flags = torch.zeros(size, device=self.device)
        flags[rank] = 0.0 if bool(torch.isfinite(value.detach()).all()) else 1.0
        flags = all_reduce_sum(flags)
        if not bool(flags.any()):
            return True
        bad_ranks = [r for r in range(size) if flags[r] > 0]
        if self.nan_policy != "skip":
            where = f"{what} is {value.detach().float().item():.6g}"
            if rank not in bad_ranks:
                where = f"{what} is non-finite on rank(s) {bad_ranks} (this rank {rank}: {value.detach().float().item():.6g})"
            raise VlfwError(f"{where} (training.nan_policy=stop); lower optimizer.lr, enable "
                            "training.clip_grad_norm, or set training.nan_policy=skip")
        log.warning("%s is non-finite%s: update skipped", what, f" on rank(s) {bad_ranks}" if size > 1 else "")
        return False

    def _skip(self, result: UpdateResult, update: int) -> UpdateResult:
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.skipped_updates += 1
        self.consecutive_skips += 1
        result.skipped = True
        result.parts.clear()
        done = update + 1
        if self.consecutive_skips > self.max_consecutive_skips:
            raise VlfwError(f"{self.consecutive_skips} consecutive updates skipped for non-finite values (update "
                            f"{done}; training.max_consecutive_skips={self.max_consecutive_skips}): the run diverged; "
                            "lower optimizer.lr or enable training.clip_grad_norm")
        allowed = max(self.max_consecutive_skips, math.floor(self.max_skipped_fraction * done))
        if self.skipped_updates > allowed:
            raise VlfwError(f"{self.skipped_updates} of {done} updates skipped for non-finite values "
                            f"(training.max_skipped_fraction={self.max_skipped_fraction}): the run is unstable; "
                            "lower optimizer.lr or enable training.clip_grad_norm")
        log.warning("update %d skipped (%d so far)", done, self.skipped_updates)
        return result

    def _base_lr(self) -> float:
        group = self.optimizer.param_groups[0]
        return float(group["lr"] / group.get("lr_multiplier", 1.0))

    def unmatched_loss_weights(self) -> dict[str, list[str]]:
        """dataset -> the names in its loss_weights that no loss term of its updates so far had."""
        out = {}
        for name, weights in self.loss_weights.items():
            seen = self.seen_terms.get(name) or set()
            if seen:
                missing = sorted(set(weights) - seen)
                if missing:
                    out[name] = missing
        return out

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"scaler": self.scaler.state_dict(), "skipped_updates": self.skipped_updates,
                "consecutive_skips": self.consecutive_skips}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.scaler.load_state_dict(state["scaler"])
        self.skipped_updates = int(state["skipped_updates"])
        self.consecutive_skips = int(state["consecutive_skips"])
