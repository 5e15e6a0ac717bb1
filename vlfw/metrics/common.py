"""Helpers shared by the metrics: sample keys, row access, percentages."""

from __future__ import annotations

from typing import Any, Hashable, Sequence

import torch


def sample_keys(batch: Any) -> list[Hashable]:
    """The per-sample record keys: batch["index"] as plain Python values."""
    try:
        index = batch["index"]
    except KeyError:
        raise KeyError("metrics key their records by batch['index'] (the sample's dataset position); "
                       "the batch has no 'index' field") from None
    if isinstance(index, torch.Tensor):
        return [int(i) for i in index.reshape(-1).tolist()]
    return [int(i) if isinstance(i, torch.Tensor) else i for i in index]


def to_list(value: Any) -> list:
    """A batch field as a list of per-sample values (tensors are split along dim 0)."""
    if isinstance(value, torch.Tensor):
        return list(value.unbind(0)) if value.dim() > 0 else [value]
    return list(value)


def field(batch: Any, name: str, metric: str) -> Any:
    try:
        return batch[name]
    except KeyError:
        raise KeyError(f"metric {metric!r} needs the batch field {name!r}; the batch has {sorted(batch)}") from None


def output(outputs: dict, name: str, metric: str) -> torch.Tensor:
    try:
        return outputs[name]
    except KeyError:
        raise KeyError(f"metric {metric!r} needs the model output {name!r}; the model returned {sorted(outputs)}") from None


def percent(hits: Sequence[float]) -> float:
    """100 * mean (0.0 for no samples is never returned: callers check emptiness)."""
    return 100.0 * float(sum(hits)) / len(hits)


def require_records(records: Sequence[Any], metric: str) -> None:
    if not records:
        raise ValueError(f"metric {metric!r} has no records: update() was never called with samples")
