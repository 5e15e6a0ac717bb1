"""Region features from a torchvision detection model with the user's own local weights.

    detector = TorchvisionDetector.from_file("fasterrcnn_resnet50_fpn", "frcnn.pth", max_regions=36)
    regions = detector.regions(PIL_image)     # vlfw.inference.Regions: features, boxes, class probs

A Faster R-CNN's final detections are re-pooled from its FPN features with its own RoI pooler
and box head, so each region's feature is the box head's representation of that box (1024-d for
the torchvision two-MLP head), the same kind of feature bottom-up-attention detectors write.
`cls_prob` is the box predictor's softmax over its classes. Weights load with weights_only
(or from safetensors): a weights file cannot run code. No weights are downloaded.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from PIL import Image

from vlfw.errors import CheckpointError, ConfigError
from vlfw.inference.inputs import Regions

BUILDERS = ("fasterrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn_v2", "fasterrcnn_mobilenet_v3_large_fpn",
            "fasterrcnn_mobilenet_v3_large_320_fpn")


class TorchvisionDetector:
    def __init__(self, model: torch.nn.Module, max_regions: int = 36, min_regions: int = 10,
                 score_threshold: float = 0.2, device: str = "cpu") -> None:
        for part in ("transform", "backbone", "rpn", "roi_heads"):
            if not hasattr(model, part):
                raise ConfigError(f"the detector must be a torchvision two-stage detection model (it has no `{part}`)")
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.max_regions = int(max_regions)
        self.min_regions = int(min_regions)
        self.score_threshold = float(score_threshold)
        heads = model.roi_heads
        heads.detections_per_img = max(heads.detections_per_img, self.max_regions)

    @classmethod
    def from_file(cls, name: str, weights: str | os.PathLike, num_classes: int | None = None, **options: Any):
        """torchvision.models.detection.<name> without any download, with the weights of `weights`."""
        import torchvision

        if name not in BUILDERS:
            raise ConfigError(f"unknown detector {name!r}; known: {', '.join(BUILDERS)}")
        path = str(weights)
        if not os.path.isfile(path):
            raise CheckpointError(f"detector weights not found: {path}")
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as error:  # noqa: BLE001  (not a weights file, or one that needs code)
                raise CheckpointError(f"cannot read detector weights {path}: {str(error).splitlines()[0]}") from None
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = state["model"]
        if num_classes is None:
            key = "roi_heads.box_predictor.cls_score.weight"
            num_classes = int(state[key].shape[0]) if key in state else 91
        builder = getattr(torchvision.models.detection, name)
        model = builder(weights=None, weights_backbone=None, num_classes=num_classes)
        problems = model.load_state_dict(state, strict=False)
        if problems.missing_keys or problems.unexpected_keys:
            raise CheckpointError(f"{path} does not fit {name}: missing {problems.missing_keys[:3]}, "
                                  f"unexpected {problems.unexpected_keys[:3]}")
        return cls(model, **options)

    @torch.inference_mode()
    def regions(self, image: Image.Image) -> Regions:
        return self.regions_batch([image])[0]

    @torch.inference_mode()
    def regions_batch(self, images: list[Image.Image]) -> list[Regions]:
        from torchvision.transforms.functional import pil_to_tensor

        model = self.model
        tensors = [pil_to_tensor(i.convert("RGB")).float().div(255).to(self.device) for i in images]
        originals = [t.shape[-2:] for t in tensors]
        batch, _ = model.transform(tensors)
        features = model.backbone(batch.tensors)
        if isinstance(features, torch.Tensor):
            features = {"0": features}
        proposals, _ = model.rpn(batch, features)
        heads = model.roi_heads
        # keep low-scoring detections too, then take the top max_regions (at least min_regions)
        threshold = heads.score_thresh
        heads.score_thresh = 0.0
        try:
            detections, _ = heads(features, proposals, batch.image_sizes)
        finally:
            heads.score_thresh = threshold
        kept = []
        for n, detection in enumerate(detections):
            boxes, scores = detection["boxes"], detection["scores"]
            keep = scores >= self.score_threshold
            if int(keep.sum()) < self.min_regions:
                keep = torch.zeros_like(keep)
                keep[: self.min_regions] = True
            boxes = boxes[keep][: self.max_regions]
            if len(boxes) == 0:  # nothing detected: the whole image as one region
                height, width = batch.image_sizes[n]
                boxes = torch.tensor([[0.0, 0.0, float(width), float(height)]], device=self.device)
            kept.append(boxes)
        # one pooling call for the batch: the pooler numbers the box lists by image
        representation = heads.box_head(heads.box_roi_pool(features, kept, batch.image_sizes))
        logits, _ = heads.box_predictor(representation)
        probabilities = torch.softmax(logits, dim=-1)
        out, start = [], 0
        for n, boxes in enumerate(kept):
            rows = slice(start, start + len(boxes))
            start += len(boxes)
            scale_h = originals[n][0] / batch.image_sizes[n][0]
            scale_w = originals[n][1] / batch.image_sizes[n][1]
            original = boxes * torch.tensor([scale_w, scale_h, scale_w, scale_h], device=boxes.device)
            out.append(Regions(representation[rows].cpu().numpy().astype(np.float32), original.cpu().numpy(),
                               float(originals[n][1]), float(originals[n][0]),
                               probabilities[rows].cpu().numpy().astype(np.float32)))
        return out
