"""`vlmo_itc`: retrieval fine-tuning with a learned temperature and negatives from every rank."""

from __future__ import annotations

import math

import torch
from torch import nn

from vlfw.data.batch import Batch
from vlfw.losses.base import Loss
from vlfw.registry import LOSSES

from vlfw_vlmo.objectives import contrastive_loss


@LOSSES.register("vlmo_itc")
class VLMoContrastiveLoss(Loss):
    """Symmetric InfoNCE over image_embeddings / text_embeddings (B, D), gathered over ranks.

    The temperature is the model's learned `logit_scale` output (so the optimizer trains it);
    without one, a fixed scale of 1 / `temperature` is used.
    """

    def __init__(self, temperature: float = 0.07, max_logit_scale: float = 100.0) -> None:
        super().__init__()
        self.register_buffer("fallback_scale", torch.tensor(math.log(1.0 / temperature)), persistent=False)
        self.max_logit_scale = float(max_logit_scale)

    def forward(self, batch: Batch, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        image, text = outputs["image_embeddings"], outputs["text_embeddings"]
        if text.dim() != 2:
            raise ValueError("vlmo_itc trains on one caption per image: text_embeddings must be (B, D), "
                             f"got {tuple(text.shape)}")
        scale = outputs.get("logit_scale", self.fallback_scale)
        return contrastive_loss(image, text, scale, self.max_logit_scale).loss
