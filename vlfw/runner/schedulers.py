"""Learning-rate schedules: a factor of each group's peak lr as a function of the update."""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from vlfw.errors import ConfigError
from vlfw.registry import SCHEDULERS


def warmup_updates(config: Any, total_updates: int) -> int:
    warmup = int(config.get("warmup_updates") or 0)
    if warmup == 0:
        warmup = int(round(float(config.get("warmup_ratio") or 0.0) * total_updates))
    return warmup


def _warmup_then(decay: Callable[[float], float], warmup: int, total: int, min_ratio: float) -> Callable[[int], float]:
    def factor(update: int) -> float:
        if update < warmup:
            return (update + 1) / warmup
        span = max(1, total - warmup)
        progress = min(1.0, (update - warmup) / span)
        return min_ratio + (1.0 - min_ratio) * decay(progress)

    return factor


@SCHEDULERS.register("warmup_linear")
def warmup_linear(config: Any, total_updates: int) -> Callable[[int], float]:
    """Linear warmup to the peak lr, then linear decay to min_lr_ratio at the last update."""
    return _warmup_then(lambda p: 1.0 - p, warmup_updates(config, total_updates), total_updates,
                        float(config.get("min_lr_ratio") or 0.0))


@SCHEDULERS.register("warmup_cosine")
def warmup_cosine(config: Any, total_updates: int) -> Callable[[int], float]:
    """Linear warmup, then half-cosine decay to min_lr_ratio."""
    return _warmup_then(lambda p: 0.5 * (1.0 + math.cos(math.pi * p)), warmup_updates(config, total_updates),
                        total_updates, float(config.get("min_lr_ratio") or 0.0))


@SCHEDULERS.register("constant")
def constant(config: Any, total_updates: int) -> Callable[[int], float]:
    """Linear warmup (if any), then the peak lr."""
    warmup = warmup_updates(config, total_updates)
    return lambda update: (update + 1) / warmup if update < warmup else 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, config: Any, total_updates: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR whose factor at update u comes from SCHEDULERS[config.type]."""
    if total_updates <= 0:
        raise ConfigError(f"the schedule needs a positive number of updates, got {total_updates}")
    factor = SCHEDULERS.get(str(config.type))(config, total_updates)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
