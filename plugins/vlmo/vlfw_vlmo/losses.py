"""`vlmo_itc`: the name VLMo recipes use for vlfw's `image_text_contrastive` (learned temperature from
the model's `logit_scale`, negatives gathered from every rank)."""

from __future__ import annotations

from vlfw.losses.contrastive import ImageTextContrastive
from vlfw.registry import LOSSES


@LOSSES.register("vlmo_itc")
class VLMoContrastiveLoss(ImageTextContrastive):
    """Exactly vlfw's `image_text_contrastive` (params temperature, max_logit_scale)."""
