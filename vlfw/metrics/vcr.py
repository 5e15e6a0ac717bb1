"""VCR: Q->A, QA->R and Q->AR accuracy."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from vlfw.data.batch import Batch
from vlfw.metrics.base import Metric
from vlfw.metrics.common import field, output, percent, require_records, sample_keys
from vlfw.registry import METRICS


def vcr_summary(records: Sequence[tuple[bool, bool]]) -> dict[str, float]:
    """q2a, qa2r and q2ar (right only when both are) from (answer right, rationale right) per
    question; shared by `vcr_accuracy` and `vlfw_score vcr`."""
    return {
        "q2a": percent([a for a, _ in records]),
        "qa2r": percent([r for _, r in records]),
        "q2ar": percent([a and r for a, r in records]),
    }


@METRICS.register("vcr_accuracy")
class VCRAccuracy(Metric):
    """"q2a" (answer right), "qa2r" (rationale right, given the right answer), "q2ar" (both)."""

    primary = "q2ar"

    def update(self, batch: Batch, outputs: dict[str, torch.Tensor]) -> None:
        answer = output(outputs, "answer_logits", "vcr_accuracy").detach().argmax(dim=-1).cpu()
        rationale = output(outputs, "rationale_logits", "vcr_accuracy").detach().argmax(dim=-1).cpu()
        answer_label = torch.as_tensor(field(batch, "answer_label", "vcr_accuracy")).reshape(-1).cpu()
        rationale_label = torch.as_tensor(field(batch, "rationale_label", "vcr_accuracy")).reshape(-1).cpu()
        answer_ok = (answer == answer_label).tolist()
        rationale_ok = (rationale == rationale_label).tolist()
        for key, a, r in zip(sample_keys(batch), answer_ok, rationale_ok):
            self.add(key, (bool(a), bool(r)))

    def summarize(self, records: list[Any]) -> dict[str, float]:
        require_records(records, "vcr_accuracy")
        return vcr_summary(records)
