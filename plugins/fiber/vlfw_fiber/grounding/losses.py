"""Grounding losses: token-level sigmoid focal loss, centerness-weighted GIoU, centerness BCE."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

from vlfw.distributed import all_reduce_sum, world


def global_mean_count(value: torch.Tensor, minimum: float = 1.0) -> torch.Tensor:
    """`value` summed over ranks / world size, at least `minimum`: a normaliser every rank agrees
    on (DDP's gradient mean over ranks then turns it into the global-count normalisation)."""
    total = all_reduce_sum(value.detach().float().clone())
    return (total / world()[1]).clamp(min=minimum)


def token_focal_loss(logits: torch.Tensor, token_targets: torch.Tensor, text_mask: torch.Tensor,
                     alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Sum over (location, real token) pairs of torchvision's sigmoid focal loss; padded tokens
    are left out. logits, token_targets [B, L, T]; text_mask [B, T] bool."""
    valid = text_mask.bool()[:, None, :].expand_as(logits)
    return sigmoid_focal_loss(logits[valid], token_targets[valid].to(logits.dtype), alpha=alpha, gamma=gamma,
                              reduction="sum")


def decode_distances(locations: torch.Tensor, distances: torch.Tensor) -> torch.Tensor:
    """Locations [L, 2] (x, y) and (l, t, r, b) distances [..., L, 4] -> xyxy boxes [..., L, 4]."""
    x, y = locations[:, 0], locations[:, 1]
    return torch.stack([x - distances[..., 0], y - distances[..., 1], x + distances[..., 2], y + distances[..., 3]], dim=-1)


def grounding_losses(outputs: dict[str, torch.Tensor], assigned: dict[str, torch.Tensor], focal_alpha: float = 0.25,
                     focal_gamma: float = 2.0) -> dict[str, torch.Tensor]:
    """{"token_focal", "box_giou", "centerness"}: focal summed / #positive locations; GIoU on
    positives weighted by their centerness targets / sum of those targets; centerness BCE on
    positives / #positive locations. Counts are summed over ranks when torch.distributed is up."""
    positive = assigned["matched"] >= 0
    num_positive = global_mean_count(positive.sum())
    focal = token_focal_loss(outputs["token_logits"], assigned["token_targets"], outputs["text_mask"], focal_alpha,
                             focal_gamma) / num_positive
    centerness_target = assigned["centerness_targets"][positive]
    predicted = decode_distances(outputs["locations"], outputs["box_distances"])[positive]
    giou = generalized_box_iou_loss(predicted, assigned["box_targets"][positive], reduction="none")
    giou = (giou * centerness_target).sum() / global_mean_count(centerness_target.sum(), minimum=1e-6)
    centerness = F.binary_cross_entropy_with_logits(outputs["centerness_logits"][positive], centerness_target,
                                                    reduction="sum") / num_positive
    return {"token_focal": focal, "box_giou": giou, "centerness": centerness}
