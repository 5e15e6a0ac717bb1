"""`fiber_itc`: vlfw's `image_text_contrastive` with FIBER's temperature range (learned, in [0.001, 1],
so logits up to 1000 x cosine)."""

from __future__ import annotations

from vlfw.losses.contrastive import ImageTextContrastive
from vlfw.registry import LOSSES

MAX_LOGIT_SCALE = 1000.0  # 1 / the smallest temperature, 0.001


@LOSSES.register("fiber_itc")
class FIBERContrastiveLoss(ImageTextContrastive):
    """vlfw's `image_text_contrastive` (negatives from every rank) with max_logit_scale 1000."""

    def __init__(self, temperature: float = 0.07, max_logit_scale: float = MAX_LOGIT_SCALE) -> None:
        super().__init__(temperature=temperature, max_logit_scale=max_logit_scale)
