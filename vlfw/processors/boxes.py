"""Box conversions and checks. Boxes are float tensors (..., 4); xyxy means x1, y1, x2, y2 in
pixels, xywh means x, y (top-left), width, height."""

from __future__ import annotations

import torch
from torchvision.ops import box_convert
from torchvision.ops import box_iou as _torchvision_box_iou


def _as_boxes(boxes: torch.Tensor) -> torch.Tensor:
    boxes = torch.as_tensor(boxes)
    if not boxes.is_floating_point():
        boxes = boxes.float()
    if boxes.shape[-1] != 4:
        raise ValueError(f"boxes must have 4 coordinates in the last dimension, got shape {tuple(boxes.shape)}")
    return boxes


def xywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    return box_convert(_as_boxes(boxes), "xywh", "xyxy")


def xyxy_to_xywh(boxes: torch.Tensor) -> torch.Tensor:
    return box_convert(_as_boxes(boxes), "xyxy", "xywh")


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU matrix (N, M) of xyxy boxes a (N, 4) and b (M, 4)."""
    a, b = _as_boxes(a), _as_boxes(b)
    dtype = torch.promote_types(a.dtype, b.dtype)
    return _torchvision_box_iou(a.reshape(-1, 4).to(dtype), b.reshape(-1, 4).to(dtype))


def clip_boxes(boxes: torch.Tensor, width: float, height: float) -> torch.Tensor:
    """Clamp xyxy boxes to the image [0, width] x [0, height]."""
    boxes = _as_boxes(boxes).clone()
    boxes[..., 0::2] = boxes[..., 0::2].clamp(0, width)
    boxes[..., 1::2] = boxes[..., 1::2].clamp(0, height)
    return boxes


def normalize_boxes(boxes: torch.Tensor, width: float, height: float) -> torch.Tensor:
    """xyxy pixel boxes scaled to [0, 1] by the image size."""
    boxes = _as_boxes(boxes)
    scale = boxes.new_tensor([width, height, width, height])
    return boxes / scale


def box_geometry(boxes: torch.Tensor, width: float, height: float) -> torch.Tensor:
    """(N, 7) features [x1, y1, x2, y2, w, h, w*h], all relative to the image size."""
    normalized = normalize_boxes(boxes, width, height)
    w = normalized[..., 2] - normalized[..., 0]
    h = normalized[..., 3] - normalized[..., 1]
    return torch.cat([normalized, w.unsqueeze(-1), h.unsqueeze(-1), (w * h).unsqueeze(-1)], dim=-1)


def relative_box_geometry(boxes: torch.Tensor, image_size: torch.Tensor) -> torch.Tensor:
    """Batched `box_geometry`: boxes (B, N, 4) xyxy pixels, image_size (B, 2) = (width, height)
    -> (B, N, 7) [x1, y1, x2, y2, w, h, w*h] relative to each image (sizes below 1 count as 1)."""
    wh = image_size.to(boxes.dtype).clamp(min=1.0)
    xyxy = boxes / torch.cat([wh, wh], dim=-1).unsqueeze(-2)
    width = xyxy[..., 2] - xyxy[..., 0]
    height = xyxy[..., 3] - xyxy[..., 1]
    return torch.cat([xyxy, width[..., None], height[..., None], (width * height)[..., None]], dim=-1)


def validate_boxes(boxes: torch.Tensor, width: float, height: float, tolerance: float = 1.0) -> str | None:
    """None when every xyxy box is finite, non-degenerate and inside the image (with
    `tolerance` pixels of slack for rounding); otherwise a message naming the first bad box."""
    boxes = _as_boxes(boxes).reshape(-1, 4)
    for i, box in enumerate(boxes.tolist()):
        x1, y1, x2, y2 = box
        if not all(map(lambda v: v == v and abs(v) != float("inf"), box)):
            return f"box {i} {box} has a non-finite coordinate"
        if x2 <= x1 or y2 <= y1:
            return f"box {i} {box} is degenerate (needs x2 > x1 and y2 > y1)"
        if x1 < -tolerance or y1 < -tolerance or x2 > width + tolerance or y2 > height + tolerance:
            return f"box {i} {box} lies outside the {width}x{height} image"
    return None
