"""The metric interface. Metrics keep one record per sample and compute from all records, so a
distributed evaluation gathers records (never per-rank results) and the value is exact."""

from __future__ import annotations

from typing import Any, Hashable

import torch

from vlfw.data.batch import Batch
from vlfw.distributed import all_gather_object, world


class Metric:
    """reset() / update(batch, outputs) / compute() -> {name: value}.

    `update` calls `self.add(key, record)` once per sample, keyed by something unique to the
    sample (its dataset index). Records are merged by key across ranks, which also drops the
    duplicates a distributed sampler pads the last batch with. Subclasses implement
    `summarize(records)`. `primary` names the value used to select the best checkpoint.
    A metric never calls the model: what needs the model after the pass (re-ranking) is an
    evaluation step of the evaluator (vlfw.runner.rerank).
    """

    primary: str = ""
    higher_is_better: bool = True

    def __init__(self, **params: Any) -> None:
        self.params = params
        self.reset()

    def reset(self) -> None:
        self._records: dict[Hashable, Any] = {}

    def add(self, key: Hashable, record: Any) -> None:
        self._records[key] = record

    def update(self, batch: Batch, outputs: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError

    def keyed_records(self) -> list[tuple[Hashable, Any]]:
        """(key, record) pairs in a fixed order, the same on every rank after `gather`."""
        return [(k, self._records[k]) for k in sorted(self._records, key=repr)]

    def records(self) -> list[Any]:
        return [record for _, record in self.keyed_records()]

    def gather(self) -> None:
        """Merge every rank's records into every rank (a no-op outside distributed runs)."""
        if world()[1] == 1:
            return
        merged: dict = {}
        for part in all_gather_object(self._records):
            merged.update(part)
        self._records = merged

    def compute(self) -> dict[str, float]:
        return self.summarize(self.records())

    def summarize(self, records: list[Any]) -> dict[str, float]:
        raise NotImplementedError
