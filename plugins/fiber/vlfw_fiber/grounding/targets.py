"""Grounding targets: the per-image format, builders from REC / Flickr30k Entities batches, the
batch assigner base and FCOS assignment of locations to ground-truth boxes (ATSS: atss.py).

A target is one dict per image: ``{"boxes": [N, 4] xyxy in input-image pixels (the coordinates of
the image tensor the backbone saw), "positive_map": [N, T] bool}``, row n marking the tokens of the
caption that describe box n (REC: every expression token; Flickr30k Entities: the phrase's tokens).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import torch


def fcos_scale_ranges(strides: Sequence[int], multiplier: float = 8.0) -> list[tuple[float, float]]:
    """FCOS size-of-interest ranges: level l takes boxes whose largest distance from the location
    lies in [multiplier * stride_{l-1}, multiplier * stride_l] (0 for the first, inf for the last);
    with strides 8..128 that is FCOS's (0, 64, 128, 256, 512, inf)."""
    bounds = [0.0] + [multiplier * float(s) for s in strides[:-1]] + [math.inf]
    return [(bounds[i], bounds[i + 1]) for i in range(len(strides))]


def check_target(target: Mapping[str, torch.Tensor], num_tokens: int, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(boxes [N, 4] float, positive_map [N, num_tokens] bool) of one target, checked; a narrower map is padded."""
    boxes = torch.as_tensor(target["boxes"]).float().reshape(-1, 4)
    positive = torch.as_tensor(target["positive_map"]).bool()
    if positive.dim() != 2 or positive.shape[0] != boxes.shape[0] or positive.shape[1] > num_tokens:
        raise ValueError(f"{where}: positive_map must be [N, T<={num_tokens}] for {boxes.shape[0]} boxes, "
                         f"got {tuple(positive.shape)}")
    if positive.shape[1] < num_tokens:  # a map built before padding to the batch's length
        positive = torch.cat([positive, positive.new_zeros(positive.shape[0], num_tokens - positive.shape[1])], dim=1)
    if boxes.numel() and bool(((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])).any()):
        raise ValueError(f"{where}: a box is degenerate (needs x2 > x1 and y2 > y1): {boxes.tolist()}")
    if boxes.shape[0] and not bool(positive.any(dim=1).all()):
        raise ValueError(f"{where}: a box has no positive token (every row of positive_map needs one True)")
    return boxes, positive


def assign_fcos(locations: torch.Tensor, location_ranges: torch.Tensor, location_strides: torch.Tensor,
                boxes: torch.Tensor, center_sampling_radius: float | None = 1.5) -> tuple[torch.Tensor, torch.Tensor]:
    """FCOS assignment for one image: (matched box index per location [L], -1 = negative;
    (l, t, r, b) distances to the matched box [L, 4], zeros for negatives).

    A location is a candidate for a box when it lies strictly inside the box (and, with
    `center_sampling_radius`, inside the radius * stride square around the box centre, cut to the
    box) and the largest of its four distances lies in the level's range [lo, hi]. Of several
    candidate boxes the smallest-area one wins (the first of equal areas)."""
    num_locations = locations.shape[0]
    if boxes.shape[0] == 0:
        return no_match(locations)
    x, y = locations[:, 0:1], locations[:, 1:2]  # [L, 1]
    ltrb = location_box_distances(locations, boxes)
    inside = ltrb.min(dim=-1).values > 0
    if center_sampling_radius is not None:
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        radius = location_strides[:, None] * center_sampling_radius
        x1 = torch.maximum(cx - radius, boxes[:, 0])
        y1 = torch.maximum(cy - radius, boxes[:, 1])
        x2 = torch.minimum(cx + radius, boxes[:, 2])
        y2 = torch.minimum(cy + radius, boxes[:, 3])
        inside &= (x > x1) & (x < x2) & (y > y1) & (y < y2)
    largest = ltrb.max(dim=-1).values
    in_range = (largest >= location_ranges[:, 0:1]) & (largest <= location_ranges[:, 1:2])
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    candidate_area = torch.where(inside & in_range, area[None, :].expand(num_locations, -1),
                                 torch.full_like(largest, math.inf))
    best = candidate_area.argmin(dim=1)
    return matched_distances(ltrb, best, torch.isfinite(candidate_area.gather(1, best[:, None])[:, 0]))


def location_box_distances(locations: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """(l, t, r, b) from every location [L, 2] to every xyxy box [N, 4] -> [L, N, 4]."""
    x, y = locations[:, 0:1], locations[:, 1:2]
    return torch.stack([x - boxes[:, 0], y - boxes[:, 1], boxes[:, 2] - x, boxes[:, 3] - y], dim=-1)


def no_match(locations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every location negative: (-1 [L], zeros [L, 4])."""
    return (torch.full((locations.shape[0],), -1, dtype=torch.long, device=locations.device),
            locations.new_zeros(locations.shape[0], 4))


def matched_distances(ltrb: torch.Tensor, best: torch.Tensor, positive: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(matched [L]: best where positive else -1, distances to the matched box [L, 4], zeros for negatives)."""
    matched = torch.where(positive, best, torch.full_like(best, -1))
    distances = ltrb[torch.arange(ltrb.shape[0], device=ltrb.device), best]
    return matched, torch.where(positive[:, None], distances, torch.zeros_like(distances))


def centerness_targets(distances: torch.Tensor) -> torch.Tensor:
    """sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b)) for (l, t, r, b) distances [..., 4]."""
    left_right = distances[..., 0::2]
    top_bottom = distances[..., 1::2]
    ratio = (left_right.min(dim=-1).values / left_right.max(dim=-1).values.clamp(min=1e-6)) * \
            (top_bottom.min(dim=-1).values / top_bottom.max(dim=-1).values.clamp(min=1e-6))
    return ratio.clamp(min=0).sqrt()


class LocationAssigner:
    """Targets for a batch from a per-image assignment `assign_one` (FCOS here, ATSS in atss.py)."""

    def assign_one(self, locations: torch.Tensor, location_strides: torch.Tensor, location_levels: torch.Tensor,
                   boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (matched box index [L], -1 = negative; (l, t, r, b) to the matched box [L, 4])."""
        raise NotImplementedError

    def __call__(self, locations: torch.Tensor, location_strides: torch.Tensor, location_levels: torch.Tensor,
                 targets: Sequence[Mapping[str, torch.Tensor]], num_tokens: int) -> dict[str, torch.Tensor]:
        """-> {"matched" [B, L] long (-1 negative), "token_targets" [B, L, T] float, "box_targets" [B, L, 4]
        xyxy, "distance_targets" [B, L, 4], "centerness_targets" [B, L]} (zeros at negatives)."""
        names = ("matched", "token_targets", "box_targets", "distance_targets", "centerness_targets")
        out: dict[str, list[torch.Tensor]] = {name: [] for name in names}
        for i, target in enumerate(targets):
            boxes, positive = check_target(target, num_tokens, f"grounding target {i}")
            boxes, positive = boxes.to(locations.device), positive.to(locations.device)
            matched, distances = self.assign_one(locations, location_strides, location_levels, boxes)
            is_positive = matched >= 0
            index = matched.clamp(min=0)
            tokens = positive.float()[index] if boxes.shape[0] else locations.new_zeros(len(matched), num_tokens)
            box = boxes[index] if boxes.shape[0] else locations.new_zeros(len(matched), 4)
            out["matched"].append(matched)
            out["token_targets"].append(tokens * is_positive[:, None])
            out["box_targets"].append(box * is_positive[:, None])
            out["distance_targets"].append(distances)
            out["centerness_targets"].append(centerness_targets(distances) * is_positive)
        return {k: torch.stack(v) for k, v in out.items()}


class FCOSAssigner(LocationAssigner):
    """FCOS assignment (see `assign_fcos`) with scale ranges from `fcos_scale_ranges(strides,
    scale_multiplier)` (or given `scale_ranges`) and optional centre sampling."""

    def __init__(self, strides: Sequence[int], scale_multiplier: float = 8.0, center_sampling_radius: float | None = 1.5,
                 scale_ranges: Sequence[tuple[float, float]] | None = None) -> None:
        self.strides = tuple(int(s) for s in strides)
        self.scale_ranges = [tuple(map(float, r)) for r in (scale_ranges or fcos_scale_ranges(self.strides, scale_multiplier))]
        if len(self.scale_ranges) != len(self.strides):
            raise ValueError(f"FCOSAssigner: {len(self.scale_ranges)} scale ranges for {len(self.strides)} levels")
        self.center_sampling_radius = center_sampling_radius

    def assign_one(self, locations: torch.Tensor, location_strides: torch.Tensor, location_levels: torch.Tensor,
                   boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ranges = locations.new_tensor(self.scale_ranges)[location_levels]
        return assign_fcos(locations, ranges, location_strides, boxes, self.center_sampling_radius)


# -- building targets from vlfw batches ---------------------------------------------------------


def expression_token_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor, special_ids: Iterable[int]) -> torch.Tensor:
    """[B, T] bool: the real tokens that are not special ([CLS], [SEP], [PAD], ...)."""
    mask = attention_mask.bool().clone()
    for special in special_ids:
        mask &= input_ids != int(special)
    return mask


def span_positive_map(spans: Sequence[tuple[int, int]], num_tokens: int) -> torch.Tensor:
    """[N, T] bool from half-open token spans [start, end), one per box."""
    positive = torch.zeros(len(spans), num_tokens, dtype=torch.bool)
    for n, (start, end) in enumerate(spans):
        if not 0 <= start < end <= num_tokens:
            raise ValueError(f"token span {(start, end)} of box {n} is not inside 0..{num_tokens}")
        positive[n, start:end] = True
    return positive


def rec_targets(batch: Mapping[str, Any], special_ids: Iterable[int]) -> list[dict[str, torch.Tensor]]:
    """REC (refcoco builders, visual=images): one box per image (`gt_box` [B, 4], already moved
    with the image transform), positive on every expression token."""
    tokens = expression_token_mask(batch["input_ids"], batch["attention_mask"], special_ids)
    boxes = torch.as_tensor(batch["gt_box"]).float().reshape(-1, 4)
    return [{"boxes": boxes[i:i + 1], "positive_map": tokens[i:i + 1]} for i in range(boxes.shape[0])]


def boxes_per_sample(gt_boxes: Any) -> list[torch.Tensor]:
    """A list of [M_i, 4] boxes from a list, or from the collate's zero-padded [B, M, 4] tensor."""
    if isinstance(gt_boxes, torch.Tensor):  # collate pads with all-zero rows
        return [rows[(rows != 0).any(dim=1)].float() for rows in gt_boxes.reshape(gt_boxes.shape[0], -1, 4)]
    return [torch.as_tensor(rows).float().reshape(-1, 4) for rows in gt_boxes]


def phrase_targets(batch: Mapping[str, Any], special_ids: Iterable[int]) -> list[dict[str, torch.Tensor]]:
    """Flickr30k Entities (one sample per phrase, `[CLS] phrase [SEP] sentence [SEP]`): every box
    of the phrase's chain (`gt_boxes`), positive on the phrase's tokens (segment A, token_type 0)."""
    tokens = expression_token_mask(batch["input_ids"], batch["attention_mask"], special_ids)
    tokens &= torch.as_tensor(batch["token_type_ids"]) == 0
    return [{"boxes": boxes, "positive_map": tokens[i:i + 1].expand(boxes.shape[0], -1)}
            for i, boxes in enumerate(boxes_per_sample(batch["gt_boxes"]))]
