"""Referring expression comprehension: Acc@0.5 overall and per split."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from vlfw.data.batch import Batch
from vlfw.metrics.base import Metric
from vlfw.metrics.common import field, output, percent, require_records, sample_keys, to_list
from vlfw.registry import METRICS


def masked_region_logits(logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Logits with padded regions set to -inf (mask: True = real region)."""
    logits = logits.detach().float()
    if mask is None:
        return logits
    mask = torch.as_tensor(mask, dtype=torch.bool, device=logits.device)
    if not bool(mask.any(dim=-1).all()):
        raise ValueError("a sample has no real region (region_mask is all False)")
    return logits.masked_fill(~mask, float("-inf"))


def paired_box_iou(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of row i of `predicted` with row i of `target` (xyxy, float32): the diagonal of
    `box_iou` with the same arithmetic, without the (N, N) matrix."""
    a = torch.as_tensor(predicted, dtype=torch.float32).reshape(-1, 4)
    b = torch.as_tensor(target, dtype=torch.float32).reshape(-1, 4)
    if a.shape != b.shape:
        raise ValueError(f"paired_box_iou: {len(a)} predicted boxes for {len(b)} target boxes")
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    wh = (torch.min(a[:, 2:], b[:, 2:]) - torch.max(a[:, :2], b[:, :2])).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    return inter / (area_a + area_b - inter)


def rec_summary(hits: Sequence[bool], splits: Sequence[str | None], iou_threshold: float = 0.5) -> dict[str, float]:
    """acc@<t> over all expressions and acc@<t>_<split> per native split (percentages); shared by
    `rec_accuracy` and `vlfw_score refcoco*`."""
    name = "acc@0.5" if iou_threshold == 0.5 else f"acc@{iou_threshold:g}"
    result = {name: percent(list(hits))}
    by_split: dict[str, list[bool]] = {}
    for hit, split in zip(hits, splits):
        if split is not None:
            by_split.setdefault(str(split), []).append(hit)
    for split, values in sorted(by_split.items()):
        result[f"{name}_{split}"] = percent(values)
    return result


@METRICS.register("rec_accuracy")
class RECAccuracy(Metric):
    """Share of expressions whose top region has IoU >= `iou_threshold` (0.5) with gt_box."""

    primary = "acc@0.5"

    def __init__(self, iou_threshold: float = 0.5, **params: Any) -> None:
        super().__init__(iou_threshold=iou_threshold, **params)
        self.iou_threshold = float(iou_threshold)

    def update(self, batch: Batch, outputs: dict[str, torch.Tensor]) -> None:
        logits = masked_region_logits(output(outputs, "region_logits", "rec_accuracy"), batch.get("region_mask"))
        boxes = torch.as_tensor(field(batch, "region_boxes", "rec_accuracy")).float().cpu()
        gt = torch.as_tensor(field(batch, "gt_box", "rec_accuracy")).float().cpu().reshape(-1, 4)
        choice = logits.argmax(dim=-1).cpu()
        predicted = boxes[torch.arange(len(choice)), choice]
        iou = paired_box_iou(predicted, gt)
        splits = to_list(batch["split"]) if "split" in batch else [None] * len(choice)
        for key, value, split in zip(sample_keys(batch), iou.tolist(), splits):
            self.add(key, (value >= self.iou_threshold, split))

    def summarize(self, records: list[Any]) -> dict[str, float]:
        require_records(records, "rec_accuracy")
        return rec_summary([hit for hit, _ in records], [split for _, split in records], self.iou_threshold)
