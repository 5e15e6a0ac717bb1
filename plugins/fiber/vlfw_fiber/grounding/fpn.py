"""Feature pyramid over the fused backbone's multi-scale maps (torchvision's FPN, optional P6/P7)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelP6P7


def default_strides(num_maps: int) -> tuple[int, ...]:
    """Swin-style strides 4, 8, 16, 32, ... for `num_maps` input maps."""
    return tuple(2 ** (i + 2) for i in range(num_maps))


class FeaturePyramid(nn.Module):
    """[B, C_i, H_i, W_i] maps (finest first) -> levels [B, width, H_l, W_l] and their strides.

    torchvision's FeaturePyramidNetwork (lateral 1x1 + top-down + 3x3 output convs); with
    `p6p7=True` two more levels (stride x2, x4 of the coarsest) from torchvision's LastLevelP6P7
    applied to the coarsest FPN output, as in FCOS/ATSS.
    """

    def __init__(self, in_channels: Sequence[int], width: int = 256, strides: Sequence[int] | None = None,
                 p6p7: bool = False) -> None:
        super().__init__()
        self.in_channels = [int(c) for c in in_channels]
        if not self.in_channels:
            raise ValueError("FeaturePyramid: in_channels is empty; give one channel count per image map")
        self.input_strides = tuple(int(s) for s in (strides if strides is not None else default_strides(len(self.in_channels))))
        if len(self.input_strides) != len(self.in_channels):
            raise ValueError(f"FeaturePyramid: {len(self.input_strides)} strides for {len(self.in_channels)} input maps")
        extra = LastLevelP6P7(width, width) if p6p7 else None
        self.fpn = FeaturePyramidNetwork(self.in_channels, width, extra_blocks=extra)
        self.width = int(width)
        last = self.input_strides[-1]
        self.strides = self.input_strides + ((last * 2, last * 4) if p6p7 else ())

    @property
    def num_levels(self) -> int:
        return len(self.strides)

    def forward(self, image_maps: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(image_maps) != len(self.in_channels):
            raise ValueError(f"FeaturePyramid: expected {len(self.in_channels)} image maps, got {len(image_maps)}")
        for i, (feature, channels) in enumerate(zip(image_maps, self.in_channels)):
            if feature.dim() != 4 or feature.shape[1] != channels:
                raise ValueError(f"FeaturePyramid: image map {i} must be [B, {channels}, H, W] (channels first), "
                                 f"got {tuple(feature.shape)}")
        levels = self.fpn(OrderedDict((str(i), feature) for i, feature in enumerate(image_maps)))
        return list(levels.values())
