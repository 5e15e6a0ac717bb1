"""Phrase grounding (Flickr30k Entities): Recall@1/5/10 at IoU >= 0.5, any-box protocol."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from vlfw.data.batch import Batch
from vlfw.metrics.base import Metric
from vlfw.metrics.common import field, output, percent, require_records, sample_keys
from vlfw.metrics.rec import masked_region_logits
from vlfw.processors.boxes import box_iou
from vlfw.registry import METRICS


def _gt_boxes_per_sample(batch: Batch) -> list[torch.Tensor]:
    gt = field(batch, "gt_boxes", "grounding_recall")
    if isinstance(gt, torch.Tensor):
        mask = batch.get("gt_boxes_mask")
        rows = []
        for i in range(gt.shape[0]):
            boxes = gt[i].reshape(-1, 4)
            if mask is not None:
                boxes = boxes[torch.as_tensor(mask[i], dtype=torch.bool).reshape(-1)]
            else:  # collate pads with all-zero boxes
                boxes = boxes[(boxes != 0).any(dim=1)]
            rows.append(boxes)
        return [r.float().cpu() for r in rows]
    return [torch.as_tensor(boxes).float().cpu().reshape(-1, 4) for boxes in gt]


def grounding_hits(ranked_boxes: torch.Tensor, gt_boxes: torch.Tensor, ks: Sequence[int] = (1, 5, 10),
                   iou_threshold: float = 0.5) -> tuple[bool, ...]:
    """Per k: whether one of the first k of `ranked_boxes` (xyxy, best first) has IoU >=
    `iou_threshold` with ANY of `gt_boxes` (the any-box protocol). Shared by `grounding_recall`
    and `vlfw_score flickr30k_entities`."""
    ranked = torch.as_tensor(ranked_boxes, dtype=torch.float32).reshape(-1, 4)
    gt = torch.as_tensor(gt_boxes, dtype=torch.float32).reshape(-1, 4)
    good = (box_iou(ranked, gt) >= iou_threshold).any(dim=1)
    return tuple(bool(good[:k].any()) for k in ks)


def grounding_summary(records: Sequence[Sequence[bool]], ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """recall@k (percentages) from `grounding_hits` of every phrase."""
    return {f"recall@{k}": percent([r[j] for r in records]) for j, k in enumerate(ks)}


@METRICS.register("grounding_recall")
class GroundingRecall(Metric):
    """"recall@k": share of phrases with a top-k region of IoU >= 0.5 with any ground-truth box.

    gt_boxes: a list of (M_i, 4) xyxy tensors per sample, or a padded (B, M, 4) tensor with
    gt_boxes_mask (B, M) (without a mask, all-zero rows are padding). Padded regions (region_mask False) are never ranked.
    """

    primary = "recall@1"

    def __init__(self, ks: Sequence[int] = (1, 5, 10), iou_threshold: float = 0.5, **params: Any) -> None:
        super().__init__(ks=ks, iou_threshold=iou_threshold, **params)
        self.ks = tuple(int(k) for k in ks)
        self.iou_threshold = float(iou_threshold)

    def update(self, batch: Batch, outputs: dict[str, torch.Tensor]) -> None:
        logits = masked_region_logits(output(outputs, "region_logits", "grounding_recall"), batch.get("region_mask")).cpu()
        regions = torch.as_tensor(field(batch, "region_boxes", "grounding_recall")).float().cpu()
        gt_boxes = _gt_boxes_per_sample(batch)
        for i, key in enumerate(sample_keys(batch)):
            if gt_boxes[i].numel() == 0:
                raise ValueError(f"grounding_recall: sample {key} has no ground-truth box; phrases without "
                                 "boxes must be skipped by the dataset")
            real = int(torch.isfinite(logits[i]).sum())
            order = logits[i].argsort(descending=True, stable=True)[:real]
            self.add(key, grounding_hits(regions[i][order], gt_boxes[i], self.ks, self.iou_threshold))

    def summarize(self, records: list[Any]) -> dict[str, float]:
        require_records(records, "grounding_recall")
        return grounding_summary(records, self.ks)
