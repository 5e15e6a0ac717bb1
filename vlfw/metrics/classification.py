"""Classification accuracy (SNLI-VE, ...) and NLVR2 accuracy with consistency."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from vlfw.data.batch import Batch
from vlfw.metrics.base import Metric
from vlfw.metrics.common import field, output, percent, require_records, sample_keys, to_list
from vlfw.registry import METRICS


def _correct(batch: Batch, outputs: dict[str, torch.Tensor], metric: str) -> list[bool]:
    logits = output(outputs, "logits", metric)
    labels = torch.as_tensor(field(batch, "label", metric)).reshape(-1).to(logits.device)
    return (logits.detach().argmax(dim=-1).reshape(-1) == labels).tolist()


@METRICS.register("accuracy")
class Accuracy(Metric):
    """100 * share of samples whose argmax(outputs["logits"]) equals batch["label"]."""

    primary = "accuracy"

    def update(self, batch: Batch, outputs: dict[str, torch.Tensor]) -> None:
        for key, correct in zip(sample_keys(batch), _correct(batch, outputs, "accuracy")):
            self.add(key, bool(correct))

    def summarize(self, records: list[Any]) -> dict[str, float]:
        require_records(records, "accuracy")
        return {"accuracy": percent(records)}


def labeled_accuracy(predicted: Sequence[str], gold: Sequence[str]) -> dict[str, float]:
    """"accuracy" and "accuracy_<label>" (the share right among the examples whose gold label it
    is), percentages; `vlfw_score snli_ve` reports them, `accuracy` is the in-run value."""
    if len(predicted) != len(gold) or not gold:
        raise ValueError(f"labeled_accuracy: {len(predicted)} predictions for {len(gold)} gold labels")
    hits = [p == g for p, g in zip(predicted, gold)]
    result = {"accuracy": percent(hits)}
    for label in sorted(set(gold)):
        result[f"accuracy_{label}"] = percent([h for h, g in zip(hits, gold) if g == label])
    return result


def nlvr2_sentence_key(identifier: str) -> str:
    """The identifier "split-setid-pairid-sentid" with the pair id removed."""
    parts = str(identifier).rsplit("-", 2)
    if len(parts) != 3:
        raise ValueError(f"NLVR2 identifier {identifier!r} is not 'split-setid-pairid-sentid'")
    return f"{parts[0]}-{parts[2]}"


@METRICS.register("nlvr2")
class NLVR2Accuracy(Metric):
    """"accuracy" and "consistency" (share of sentences whose every example is right)."""

    primary = "accuracy"

    def update(self, batch: Batch, outputs: dict[str, torch.Tensor]) -> None:
        identifiers = to_list(field(batch, "id", "nlvr2"))
        for key, correct, identifier in zip(sample_keys(batch), _correct(batch, outputs, "nlvr2"), identifiers):
            self.add(key, (bool(correct), nlvr2_sentence_key(identifier)))

    def summarize(self, records: list[Any]) -> dict[str, float]:
        require_records(records, "nlvr2")
        sentences: dict[str, bool] = {}
        for correct, sentence in records:
            sentences[sentence] = sentences.get(sentence, True) and correct
        return {
            "accuracy": percent([correct for correct, _ in records]),
            "consistency": percent(list(sentences.values())),
        }
