"""ATSS assignment (Zhang et al., CVPR 2020), the paper's choice, for the same anchor-free head.

Each location carries one square anchor of side `anchor_scale * stride` centred on it (as ATSS
does with one anchor per location). For each ground-truth box: on every level the `top_k`
anchors whose centres are closest to the box centre are candidates; the IoU threshold is the
mean + standard deviation (unbiased) of the candidates' IoUs with the box; a candidate is positive
when its IoU reaches the threshold and its centre lies strictly inside the box. A location positive
for several boxes takes the one it overlaps most (the first of equal IoUs). The regression targets
stay FCOS distances (l, t, r, b) from the location to its box.

ATSS can leave a box without any positive (mean + std above every candidate's IoU, e.g. when one
level's candidates are far worse than the rest); with one box per REC sample that wastes the
sample. `ensure_positive=True` (our addition, not in ATSS) then makes the box's best-IoU candidate
whose centre lies inside it positive, unless that location is already another box's positive.
"""

from __future__ import annotations

import torch

from vlfw.processors.boxes import box_iou

from .targets import LocationAssigner, location_box_distances, matched_distances, no_match


def location_anchors(locations: torch.Tensor, location_strides: torch.Tensor, anchor_scale: float = 8.0) -> torch.Tensor:
    """[L, 4] xyxy squares of side anchor_scale * stride centred on each location."""
    half = location_strides[:, None] * (anchor_scale / 2)
    return torch.cat([locations - half, locations + half], dim=1)


def atss_candidates(locations: torch.Tensor, location_levels: torch.Tensor, boxes: torch.Tensor, top_k: int) -> torch.Tensor:
    """[L, N] bool: per level, the top_k locations nearest each box centre (fewer on a small level)."""
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    distance = torch.cdist(locations, centres)  # [L, N]
    candidate = torch.zeros_like(distance, dtype=torch.bool)
    columns = torch.arange(boxes.shape[0], device=boxes.device)
    for level in torch.unique(location_levels).tolist():
        rows = (location_levels == level).nonzero().squeeze(1)
        nearest = distance[rows].topk(min(top_k, rows.numel()), dim=0, largest=False).indices  # [k, N]
        candidate[rows[nearest], columns.expand_as(nearest)] = True
    return candidate


def assign_atss(locations: torch.Tensor, location_strides: torch.Tensor, location_levels: torch.Tensor, boxes: torch.Tensor,
                top_k: int = 9, anchor_scale: float = 8.0, ensure_positive: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """ATSS for one image: (matched box index per location [L], -1 = negative; (l, t, r, b) [L, 4])."""
    if boxes.shape[0] == 0:
        return no_match(locations)
    ious = box_iou(location_anchors(locations, location_strides, anchor_scale), boxes)  # [L, N]
    candidate = atss_candidates(locations, location_levels, boxes, top_k)
    count = candidate.sum(dim=0).float()
    mean = (ious * candidate).sum(dim=0) / count
    variance = (((ious - mean) ** 2) * candidate).sum(dim=0) / (count - 1).clamp(min=1)
    threshold = mean + variance.sqrt()
    ltrb = location_box_distances(locations, boxes)
    eligible = candidate & (ltrb.min(dim=-1).values > 0)
    positive = eligible & (ious >= threshold)
    if ensure_positive:
        fallback = torch.where(eligible, ious, torch.full_like(ious, -1.0))
        best_location = fallback.argmax(dim=0)  # [N]
        columns = torch.arange(boxes.shape[0], device=boxes.device)
        lacking = ~positive.any(dim=0) & (fallback.max(dim=0).values >= 0) & ~positive.any(dim=1)[best_location]
        positive[best_location[lacking], columns[lacking]] = True
    overlap = torch.where(positive, ious, torch.full_like(ious, -1.0))
    best = overlap.argmax(dim=1)
    return matched_distances(ltrb, best, positive.any(dim=1))


class ATSSAssigner(LocationAssigner):
    """Targets for a batch by ATSS (see `assign_atss`)."""

    def __init__(self, top_k: int = 9, anchor_scale: float = 8.0, ensure_positive: bool = True) -> None:
        if top_k < 1:
            raise ValueError(f"ATSSAssigner: top_k must be >= 1, got {top_k}")
        self.top_k, self.anchor_scale, self.ensure_positive = int(top_k), float(anchor_scale), bool(ensure_positive)

    def assign_one(self, locations: torch.Tensor, location_strides: torch.Tensor, location_levels: torch.Tensor,
                   boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return assign_atss(locations, location_strides, location_levels, boxes, self.top_k, self.anchor_scale,
                           self.ensure_positive)
