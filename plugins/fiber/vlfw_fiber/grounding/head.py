"""A dense, anchor-free, language-aware detection head (FCOS-style).

Chosen over the paper's DyHead + ATSS for simplicity: plain shared conv towers (conv3x3, GroupNorm,
ReLU) over every pyramid level, FCOS regression (l, t, r, b distances) and centerness on the box
tower, and class logits that are scaled dot products of the location's projected feature with the
projected text-token features, so the "classes" are the caption's tokens.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# Logit given to padded text tokens: finite (no NaN in a BCE), sigmoid exactly 0 in float32.
MASKED_TOKEN_LOGIT = -1.0e4
# exp() of the regression output is clamped here (distances up to e^10 strides) to avoid overflow.
MAX_LOG_DISTANCE = 10.0


def _group_count(width: int, wanted: int = 32) -> int:
    return math.gcd(width, wanted)


def _tower(width: int, num_convs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        layers += [nn.Conv2d(width, width, 3, padding=1), nn.GroupNorm(_group_count(width), width), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def level_locations(shapes: Sequence[tuple[int, int]], strides: Sequence[int], device: torch.device | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Location centres of every level, level-major then row-major: (xy [L, 2] in input pixels,
    stride [L], level index [L]). Cell (i, j) of a stride-s level sits at (j*s + s/2, i*s + s/2)."""
    points, stride_of, level_of = [], [], []
    for level, ((height, width), stride) in enumerate(zip(shapes, strides)):
        ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) * stride
        xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) * stride
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=1))
        stride_of.append(torch.full((height * width,), float(stride), device=device))
        level_of.append(torch.full((height * width,), level, device=device, dtype=torch.long))
    return torch.cat(points), torch.cat(stride_of), torch.cat(level_of)


class LanguageAwareDenseHead(nn.Module):
    """Pyramid levels + text token states -> per-location token logits, distances, centerness.

    Token logit = exp(logit_scale) * <normalize(P_q f), normalize(P_t t)> + bias, with P_q a 1x1
    conv on the classification tower, P_t a linear map of the text states; logit_scale starts at
    log(1/0.07), the bias at the focal-loss prior -log((1 - p) / p). Distances (l, t, r, b) in
    input pixels = stride * exp(scale_level * raw), with one learnable scale per level.
    """

    def __init__(self, width: int, text_dim: int, num_levels: int, num_convs: int = 4, embed_dim: int | None = None,
                 prior_probability: float = 0.01) -> None:
        super().__init__()
        embed_dim = int(embed_dim or width)
        self.cls_tower = _tower(width, num_convs)
        self.box_tower = _tower(width, num_convs)
        self.query_projection = nn.Conv2d(width, embed_dim, 1)
        self.token_projection = nn.Linear(text_dim, embed_dim)
        self.box_regression = nn.Conv2d(width, 4, 3, padding=1)
        self.centerness = nn.Conv2d(width, 1, 3, padding=1)
        self.level_scales = nn.Parameter(torch.ones(num_levels))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.logit_bias = nn.Parameter(torch.tensor(-math.log((1 - prior_probability) / prior_probability)))
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.zeros_(module.bias)

    def project_tokens(self, text_states: torch.Tensor) -> torch.Tensor:
        """[B, T, D_text] -> unit-norm [B, T, E]."""
        return F.normalize(self.token_projection(text_states), dim=-1)

    def token_logits(self, queries: torch.Tensor, tokens: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """Unit-norm location queries [B, L, E] x unit-norm tokens [B, T, E] -> float32 logits [B, L, T]
        (padded tokens: MASKED_TOKEN_LOGIT)."""
        scale = self.logit_scale.clamp(max=math.log(100.0)).exp()
        with torch.autocast(queries.device.type, enabled=False):  # float32 logits: the focal loss lives near 0 and 1
            logits = torch.einsum("ble,bte->blt", queries.float(), tokens.float()) * scale + self.logit_bias
        return logits.masked_fill(~text_mask[:, None, :], MASKED_TOKEN_LOGIT)

    def forward(self, levels: Sequence[torch.Tensor], strides: Sequence[int], text_states: torch.Tensor,
                text_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        if len(levels) != len(strides) or len(levels) != self.level_scales.numel():
            raise ValueError(f"LanguageAwareDenseHead: built for {self.level_scales.numel()} levels, "
                             f"got {len(levels)} maps and {len(strides)} strides")
        if text_states.dim() != 3 or text_mask.shape != text_states.shape[:2]:
            raise ValueError(f"text_states must be [B, T, D] and text_mask [B, T]; got {tuple(text_states.shape)} "
                             f"and {tuple(text_mask.shape)}")
        text_mask = text_mask.bool()
        queries, distances, centerness = [], [], []
        for level, (feature, stride) in enumerate(zip(levels, strides)):
            cls_feature = self.cls_tower(feature)
            box_feature = self.box_tower(feature)
            queries.append(self.query_projection(cls_feature).flatten(2).transpose(1, 2))
            raw = self.box_regression(box_feature).flatten(2).transpose(1, 2).float() * self.level_scales[level]
            distances.append(raw.clamp(max=MAX_LOG_DISTANCE).exp() * float(stride))  # float32: fp16 overflows at 65504
            centerness.append(self.centerness(box_feature).flatten(1).float())
        query = F.normalize(torch.cat(queries, dim=1), dim=-1)
        locations, location_strides, location_levels = level_locations([f.shape[-2:] for f in levels], strides,
                                                                        levels[0].device)
        return {
            "token_logits": self.token_logits(query, self.project_tokens(text_states), text_mask),
            "box_distances": torch.cat(distances, dim=1),
            "centerness_logits": torch.cat(centerness, dim=1),
            "locations": locations,
            "location_strides": location_strides,
            "location_levels": location_levels,
            "text_mask": text_mask,
        }
