"""Visual features of RoIs: appearance (precomputed or end-to-end ResNet + RoIAlign) concatenated
with a sinusoidal embedding of the box geometry, then Linear -> ReLU to the hidden size."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.ops import FrozenBatchNorm2d, roi_align

from vlfw.errors import ConfigError
from vlfw.processors.boxes import box_iou


def geometry_embedding(boxes: torch.Tensor, width: torch.Tensor, height: torch.Tensor,
                       size: int = 2048, wavelength: float = 1000.0) -> torch.Tensor:
    """Sinusoidal embedding of boxes (..., 4) x1,y1,x2,y2.

    The box becomes (xc, yc, w, h) scaled by 100 / image width (x values) or height (y values);
    each of the 4 values v is embedded as [sin(v / wavelength^(i/k)), cos(...)] for i < k,
    k = size / 8 (256 for 2048), giving 4 x 2k = `size` dims.
    `width`, `height` broadcast against boxes[..., 0].
    """
    if size % 8:
        raise ConfigError(f"vlbert: geometry_size must be a multiple of 8, got {size}")
    boxes = boxes.float()
    x1, y1, x2, y2 = boxes.unbind(-1)
    width, height = width.float(), height.float()
    values = torch.stack([(x1 + x2) / 2 * 100.0 / width, (y1 + y2) / 2 * 100.0 / height,
                          (x2 - x1) * 100.0 / width, (y2 - y1) * 100.0 / height], dim=-1)
    k = size // 8
    inverse = torch.exp(-math.log(wavelength) * torch.arange(k, device=boxes.device, dtype=torch.float32) / k)
    angles = values[..., None] * inverse  # (..., 4, k)
    return torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(-2)


def whole_image_box(width: torch.Tensor, height: torch.Tensor) -> torch.Tensor:
    zeros = torch.zeros_like(width)
    return torch.stack([zeros, zeros, width, height], dim=-1)


def boxes_valid(boxes: torch.Tensor) -> torch.Tensor:
    """Real boxes among zero-padded ones."""
    return (boxes[..., 2] > boxes[..., 0]) | (boxes[..., 3] > boxes[..., 1])


def box_iou_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of matching rows of a (B, 4) and b (B, 4)."""
    lt = torch.maximum(a[:, :2], b[:, :2])
    rb = torch.minimum(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = lambda x: (x[:, 2:] - x[:, :2]).clamp(min=0).prod(-1)  # noqa: E731
    return inter / (area(a) + area(b) - inter).clamp(min=1e-6)


def box_iou_batched(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, O, 4) x (B, M, 4) -> (B, O, M)."""
    return torch.stack([box_iou(x.float(), y.float()) for x, y in zip(a, b)])


class ResNetRoIExtractor(nn.Module):
    """ResNet up to the stride-16 stage, RoIAlign (14 x 14), the last stage as RoI head and
    average pooling: one appearance vector per box. Built with weights=None (no download)."""

    def __init__(self, name: str = "resnet18", output_size: int = 14, frozen_batch_norm: bool = True) -> None:
        super().__init__()
        if not name.startswith("resnet") or not hasattr(torchvision.models, name):
            raise ConfigError(f"vlbert: backbone must be a torchvision ResNet (resnet18/34/50/101/152), got {name!r}")
        norm = FrozenBatchNorm2d if frozen_batch_norm else nn.BatchNorm2d
        net = getattr(torchvision.models, name)(weights=None, norm_layer=norm)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3)
        self.head = net.layer4
        self.output_size = output_size
        self.out_channels = net.fc.in_features

    def forward(self, images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W); boxes (B, M, 4) in image pixels -> (B, M, C)."""
        b, m = boxes.shape[:2]
        fmap = self.stem(images)
        rois = torch.cat([torch.arange(b, device=boxes.device, dtype=boxes.dtype).repeat_interleave(m)[:, None],
                          boxes.reshape(-1, 4)], dim=1).to(fmap.dtype)
        pooled = roi_align(fmap, rois, output_size=self.output_size, spatial_scale=1 / 16,
                           sampling_ratio=2, aligned=True)
        return self.head(pooled).mean(dim=(2, 3)).view(b, m, -1)


def zero_masked_pixels(images: torch.Tensor, boxes: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """A copy of images (B, 3, H, W) with the pixels inside every masked box (B, M) set to 0."""
    h, w = images.shape[-2:]
    ys = torch.arange(h, device=images.device, dtype=boxes.dtype)[:, None] + 0.5
    xs = torch.arange(w, device=images.device, dtype=boxes.dtype)[None, :] + 0.5
    x1, y1, x2, y2 = (boxes[..., i][..., None, None] for i in range(4))  # (B, M, 1, 1)
    inside = (xs >= x1) & (xs <= x2) & (ys >= y1) & (ys <= y2)  # (B, M, H, W)
    hidden = (inside & masked[..., None, None]).any(dim=1)  # (B, H, W)
    return images.masked_fill(hidden[:, None], 0.0)


class VisualFeatures(nn.Module):
    """concat(appearance, geometry) -> Linear -> ReLU, for one appearance size; masked RoIs get a
    learned appearance vector instead of theirs.

    The Linear on the concatenation is kept as its two column blocks, `appearance_projection`
    (with the bias) and `geometry_projection`: W [a; g] + b = W_a a + W_g g + b, the same map
    without materialising the (D + 2048)-d concatenation. Checkpoints with the single
    `projection` Linear load (its columns are split on load)."""

    def __init__(self, appearance_size: int, hidden: int, geometry_size: int = 2048, wavelength: float = 1000.0) -> None:
        super().__init__()
        self.appearance_size = appearance_size
        self.geometry_size = geometry_size
        self.wavelength = wavelength
        self.mask_appearance = nn.Parameter(torch.zeros(appearance_size))
        self.appearance_projection = nn.Linear(appearance_size, hidden)
        self.geometry_projection = nn.Linear(geometry_size, hidden, bias=False)
        self._register_load_state_dict_pre_hook(self._split_concat_projection)

    def _split_concat_projection(self, state_dict, prefix, *args) -> None:
        weight, bias = state_dict.pop(f"{prefix}projection.weight", None), state_dict.pop(f"{prefix}projection.bias", None)
        if weight is not None:
            state_dict[f"{prefix}appearance_projection.weight"] = weight[:, : self.appearance_size]
            state_dict[f"{prefix}geometry_projection.weight"] = weight[:, self.appearance_size:]
        if bias is not None:
            state_dict[f"{prefix}appearance_projection.bias"] = bias

    def forward(self, appearance: torch.Tensor, boxes: torch.Tensor, width: torch.Tensor, height: torch.Tensor,
                masked: torch.Tensor | None = None, mean_weights: torch.Tensor | None = None) -> torch.Tensor:
        """appearance (B, N, D); masked (B, N) or None. mean_weights (B, N): an element whose
        appearance is the weighted mean of the N regions' (the whole image when the detector did
        not give it) is put first, and boxes (B, N + 1, 4) includes its box. -> (B, N(+1), H)."""
        if appearance.shape[-1] != self.appearance_size:
            raise ConfigError(f"vlbert: region features have {appearance.shape[-1]} dims but the model was built for "
                              f"{self.appearance_size}: set model_config.vlbert.region_feature_size")
        weight = self.appearance_projection.weight
        projected = F.linear(appearance, weight)
        if masked is not None:
            projected = torch.where(masked[..., None], F.linear(self.mask_appearance, weight).to(projected.dtype), projected)
        if mean_weights is not None:
            # the projection is linear: projecting the mean appearance = the mean of the projections
            weights = mean_weights.to(projected.dtype)
            weights = weights / weights.sum(1, keepdim=True).clamp(min=1.0)
            projected = torch.cat([torch.bmm(weights[:, None], projected), projected], dim=1)
        geometry = geometry_embedding(boxes, width[..., None], height[..., None], self.geometry_size, self.wavelength)
        geometry = self.geometry_projection(geometry.to(projected.dtype))
        return F.relu(projected + geometry + self.appearance_projection.bias.to(projected.dtype))
