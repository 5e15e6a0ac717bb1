"""REC Acc@0.5 and phrase-grounding Recall@k scored on PREDICTED boxes (not on given candidates).

The core's `rec_accuracy` / `grounding_recall` metrics rank given candidate regions by
`region_logits`; a dense head predicts its own boxes, so these functions and the two record-based
metrics below read the predicted boxes instead. Grounding uses the ANY-box protocol of Flickr30k
Entities (as the core's metric does): a phrase counts as found at k when one of its top-k boxes has
IoU >= threshold with any of the phrase's ground-truth boxes.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from vlfw.metrics.base import Metric
from vlfw.metrics.common import field, output, percent, require_records, sample_keys, to_list
from vlfw.processors.boxes import box_iou

from .targets import boxes_per_sample


def rec_hits(predicted: torch.Tensor, gt: torch.Tensor, iou_threshold: float = 0.5) -> torch.Tensor:
    """[N] bool: top-1 predicted box [N, 4] has IoU >= threshold with its gt box [N, 4]."""
    predicted, gt = torch.as_tensor(predicted).float().reshape(-1, 4), torch.as_tensor(gt).float().reshape(-1, 4)
    if predicted.shape != gt.shape:
        raise ValueError(f"rec_hits: {predicted.shape[0]} predicted boxes for {gt.shape[0]} ground-truth boxes")
    return box_iou(predicted, gt).diagonal() >= iou_threshold


def rec_accuracy(predicted: torch.Tensor, gt: torch.Tensor, iou_threshold: float = 0.5) -> float:
    """Acc@threshold in percent."""
    hits = rec_hits(predicted, gt, iou_threshold)
    require_records(hits.tolist(), "rec_accuracy")
    return percent(hits.tolist())


def grounding_hits(ranked: torch.Tensor, gt_boxes: torch.Tensor, ks: Sequence[int] = (1, 5, 10),
                   iou_threshold: float = 0.5) -> tuple[bool, ...]:
    """One phrase: ranked predicted boxes [K, 4] (best first), its gt boxes [M, 4] -> found at each k
    (ANY-box: IoU >= threshold with any gt box). Fewer than k predictions just rank fewer boxes."""
    ranked, gt_boxes = torch.as_tensor(ranked).float().reshape(-1, 4), torch.as_tensor(gt_boxes).float().reshape(-1, 4)
    if gt_boxes.shape[0] == 0:
        raise ValueError("grounding_hits: a phrase without ground-truth boxes cannot be scored; the dataset must skip it")
    good = (box_iou(ranked, gt_boxes) >= iou_threshold).any(dim=1)
    return tuple(bool(good[:k].any()) for k in ks)


def grounding_recall(ranked: Sequence[torch.Tensor], gt_boxes: Sequence[torch.Tensor], ks: Sequence[int] = (1, 5, 10),
                     iou_threshold: float = 0.5) -> dict[str, float]:
    """Recall@k in percent over phrases: ranked[i] [K_i, 4], gt_boxes[i] [M_i, 4]."""
    if len(ranked) != len(gt_boxes):
        raise ValueError(f"grounding_recall: {len(ranked)} ranked lists for {len(gt_boxes)} phrases")
    hits = [grounding_hits(r, g, ks, iou_threshold) for r, g in zip(ranked, gt_boxes)]
    require_records(hits, "grounding_recall")
    return {f"recall@{k}": percent([h[j] for h in hits]) for j, k in enumerate(ks)}


def _valid_rows(outputs: dict[str, torch.Tensor], name: str) -> list[torch.Tensor]:
    boxes = output(outputs, "pred_boxes", name).detach().float().cpu()  # [B, K, 4]
    valid = outputs.get("pred_valid")
    if valid is None:
        return list(boxes)
    valid = torch.as_tensor(valid).bool().cpu()
    return [boxes[i][valid[i]] for i in range(boxes.shape[0])]


class PredictedBoxRECAccuracy(Metric):
    """Acc@0.5 from outputs["pred_boxes"] [B, K, 4] (best first; only the first is read) against
    batch["gt_box"]; per split too when the batch has "split". Records keyed by sample index."""

    primary = "acc@0.5"

    def __init__(self, iou_threshold: float = 0.5, **params: Any) -> None:
        super().__init__(iou_threshold=iou_threshold, **params)
        self.iou_threshold = float(iou_threshold)

    def update(self, batch: Any, outputs: dict[str, torch.Tensor]) -> None:
        rows = _valid_rows(outputs, "predicted_box_rec_accuracy")
        gt = torch.as_tensor(field(batch, "gt_box", "predicted_box_rec_accuracy")).float().cpu().reshape(-1, 4)
        splits = to_list(batch["split"]) if "split" in batch else [None] * len(rows)
        for key, row, box, split in zip(sample_keys(batch), rows, gt, splits):
            hit = bool(row.shape[0]) and bool(rec_hits(row[:1], box[None], self.iou_threshold)[0])
            self.add(key, (hit, split))

    def summarize(self, records: list[Any]) -> dict[str, float]:
        require_records(records, "predicted_box_rec_accuracy")
        name = f"acc@{self.iou_threshold:g}"
        result = {name: percent([hit for hit, _ in records])}
        by_split: dict[str, list[bool]] = {}
        for hit, split in records:
            if split is not None:
                by_split.setdefault(str(split), []).append(hit)
        result.update({f"{name}_{split}": percent(hits) for split, hits in sorted(by_split.items())})
        return result


class PredictedBoxGroundingRecall(Metric):
    """Recall@k (ANY-box) from outputs["pred_boxes"] [B, K, 4] (+ optional "pred_valid" [B, K])
    against batch["gt_boxes"] (list of [M_i, 4] or zero-padded [B, M, 4]); one phrase per sample."""

    primary = "recall@1"

    def __init__(self, ks: Sequence[int] = (1, 5, 10), iou_threshold: float = 0.5, **params: Any) -> None:
        super().__init__(ks=ks, iou_threshold=iou_threshold, **params)
        self.ks = tuple(int(k) for k in ks)
        self.iou_threshold = float(iou_threshold)

    def update(self, batch: Any, outputs: dict[str, torch.Tensor]) -> None:
        rows = _valid_rows(outputs, "predicted_box_grounding_recall")
        gt = boxes_per_sample(field(batch, "gt_boxes", "predicted_box_grounding_recall"))
        for key, row, boxes in zip(sample_keys(batch), rows, gt):
            self.add(key, grounding_hits(row, boxes, self.ks, self.iou_threshold))

    def summarize(self, records: list[Any]) -> dict[str, float]:
        require_records(records, "predicted_box_grounding_recall")
        return {f"recall@{k}": percent([r[j] for r in records]) for j, k in enumerate(self.ks)}
