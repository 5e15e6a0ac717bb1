"""GroundingHead: FPN + language-aware FCOS head + assignment + losses + post-processing."""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from .atss import ATSSAssigner
from .fpn import FeaturePyramid
from .head import LanguageAwareDenseHead
from .losses import grounding_losses
from .postprocess import predict_phrase_boxes
from .targets import FCOSAssigner


class GroundingHead(nn.Module):
    """The fine-grained stage on top of the fused backbone's multi-scale image maps.

    An FCOS-style head (not the paper's DyHead) with language-aware token logits; locations are
    assigned to boxes by FCOS (`assignment="fcos"`, the default: scale ranges, centre sampling) or by
    ATSS (`assignment="atss"`, the paper's). A phrase scores a location by the MEAN of its tokens'
    probabilities times centerness. See README.md in this folder for every choice.

    forward(image_maps: list of [B, C_i, H_i, W_i] (finest first, strides `strides`), text_states
    [B, T, text_dim], text_mask [B, T] bool) -> {"token_logits" [B, L, T], "box_distances" [B, L, 4]
    (l, t, r, b in input pixels), "centerness_logits" [B, L], "locations" [L, 2], "location_strides"
    [L], "location_levels" [L], "text_mask" [B, T]}; L = locations over all pyramid levels.
    loss(outputs, targets) with targets one {"boxes" [N, 4] xyxy, "positive_map" [N, T] bool} per
    image -> {"token_focal", "box_giou", "centerness"} (weighted by `loss_weights`).
    predict(outputs, phrases, image_sizes, k) -> per image {"boxes" [P, k, 4], "scores", "valid"}.
    """

    def __init__(self, in_channels: Sequence[int], text_dim: int, width: int = 256, num_convs: int = 4,
                 strides: Sequence[int] | None = None, p6p7: bool = False, embed_dim: int | None = None,
                 prior_probability: float = 0.01, assignment: str = "fcos", scale_multiplier: float = 8.0,
                 center_sampling_radius: float | None = 1.5, atss_top_k: int = 9, anchor_scale: float = 8.0,
                 atss_ensure_positive: bool = True, focal_alpha: float = 0.25, focal_gamma: float = 2.0,
                 loss_weights: Mapping[str, float] | None = None, nms_threshold: float | None = 0.6,
                 pre_nms_candidates: int = 1000) -> None:
        super().__init__()
        self.pyramid = FeaturePyramid(in_channels, width, strides, p6p7)
        self.head = LanguageAwareDenseHead(width, text_dim, self.pyramid.num_levels, num_convs, embed_dim, prior_probability)
        if assignment == "fcos":
            self.assigner = FCOSAssigner(self.pyramid.strides, scale_multiplier, center_sampling_radius)
        elif assignment == "atss":
            self.assigner = ATSSAssigner(atss_top_k, anchor_scale, atss_ensure_positive)
        else:
            raise ValueError(f"GroundingHead: assignment must be 'fcos' or 'atss', got {assignment!r}")
        self.focal_alpha, self.focal_gamma = float(focal_alpha), float(focal_gamma)
        self.loss_weights = {"token_focal": 1.0, "box_giou": 1.0, "centerness": 1.0, **dict(loss_weights or {})}
        unknown = set(self.loss_weights) - {"token_focal", "box_giou", "centerness"}
        if unknown:
            raise ValueError(f"GroundingHead: unknown loss_weights {sorted(unknown)}; known: token_focal, box_giou, centerness")
        self.nms_threshold, self.pre_nms_candidates = nms_threshold, int(pre_nms_candidates)

    @property
    def strides(self) -> tuple[int, ...]:
        return self.pyramid.strides

    def forward(self, image_maps: Sequence[torch.Tensor], text_states: torch.Tensor,
                text_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.head(self.pyramid(image_maps), self.pyramid.strides, text_states, text_mask)

    def assign(self, outputs: dict[str, torch.Tensor], targets: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        if len(targets) != outputs["token_logits"].shape[0]:
            raise ValueError(f"GroundingHead: {len(targets)} targets for a batch of {outputs['token_logits'].shape[0]}")
        return self.assigner(outputs["locations"], outputs["location_strides"], outputs["location_levels"], targets,
                             outputs["token_logits"].shape[-1])

    def loss(self, outputs: dict[str, torch.Tensor], targets: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Named, weighted losses; their sum is the training loss."""
        losses = grounding_losses(outputs, self.assign(outputs, targets), self.focal_alpha, self.focal_gamma)
        return {name: value * self.loss_weights[name] for name, value in losses.items()}

    @torch.no_grad()
    def predict(self, outputs: dict[str, torch.Tensor], phrases: Sequence[torch.Tensor],
                image_sizes: torch.Tensor | Sequence[Sequence[float]], k: int = 10) -> list[dict[str, torch.Tensor]]:
        """phrases[b]: [P_b, T] bool token masks; image_sizes [B, 2] (width, height) of the input tensor."""
        return predict_phrase_boxes(outputs, phrases, image_sizes, k, self.nms_threshold, self.pre_nms_candidates)
