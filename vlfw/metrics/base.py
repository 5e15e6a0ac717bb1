"""The metric interface. Metrics keep one record per sample and compute from all records, so a
distributed evaluation gathers records (never per-rank results) and the value is exact."""

from __future__ import annotations

from typing import Any, Hashable

import torch
import torch.distributed as dist

from vlfw.data.batch import Batch
from vlfw.runner.distributed import all_gather_object


def process_group() -> tuple[int, int]:
    """(rank, world size) of the initialised default process group; (0, 1) outside one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class Metric:
    """reset() / [bind_model(model)] / update(batch, outputs) / compute() -> {name: value}.

    `update` calls `self.add(key, record)` once per sample, keyed by something unique to the
    sample (its dataset index). Records are merged by key across ranks, which also drops the
    duplicates a distributed sampler pads the last batch with. Subclasses implement
    `summarize(records)`. `primary` names the value used to select the best checkpoint.
    `bind_model(model)` hands a metric the evaluated model (optional; see its docstring).
    """

    primary: str = ""
    higher_is_better: bool = True

    def __init__(self, **params: Any) -> None:
        self.params = params
        self.reset()

    def reset(self) -> None:
        self._records: dict[Hashable, Any] = {}

    def bind_model(self, model: torch.nn.Module) -> None:
        """Called by the evaluator before each evaluation pass (after `reset`) with the model
        being evaluated, unwrapped from DDP / torch.compile. Default: nothing.

        A metric that needs the model after `update` (e.g. retrieval re-ranking in `summarize`)
        keeps it in an attribute, never in a record: records are pickled and gathered across ranks.
        """

    def add(self, key: Hashable, record: Any) -> None:
        self._records[key] = record

    def update(self, batch: Batch, outputs: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError

    def records(self) -> list[Any]:
        return [self._records[k] for k in sorted(self._records, key=repr)]

    def gather(self) -> None:
        """Merge every rank's records into every rank (a no-op outside distributed runs)."""
        if process_group()[1] == 1:
            return
        merged: dict = {}
        for part in all_gather_object(self._records):
            merged.update(part)
        self._records = merged

    def compute(self) -> dict[str, float]:
        return self.summarize(self.records())

    def summarize(self, records: list[Any]) -> dict[str, float]:
        raise NotImplementedError
