"""The shared task losses. Each reads the fields named in docs/conventions.md."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vlfw.data.batch import Batch
from vlfw.losses.base import Loss
from vlfw.registry import LOSSES


@LOSSES.register("soft_bce")
class SoftBinaryCrossEntropy(Loss):
    """BCE-with-logits on VQA soft scores, summed over answers and averaged over the batch
    (the mean over all entries scaled by the number of answers, as VL-BERT and VLMo train)."""

    def forward(self, batch: Batch, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = outputs["logits"]
        targets = batch.targets.to(logits.dtype)
        return F.binary_cross_entropy_with_logits(logits, targets, reduction="mean") * targets.shape[1]


@LOSSES.register("cross_entropy")
class CrossEntropy(Loss):
    """Softmax cross-entropy of `logits` against the class index `label`."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, batch: Batch, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(outputs["logits"].float(), batch.label.long(), label_smoothing=self.label_smoothing)


@LOSSES.register("rec_bce")
class RegionBinaryCrossEntropy(Loss):
    """Per-region BCE of `region_logits` against `region_targets` (IoU > 0.5), padding ignored."""

    def forward(self, batch: Batch, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = outputs["region_logits"].float()
        targets = batch.region_targets.to(logits.dtype)
        mask = batch.get("region_mask")
        losses = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        if mask is None:
            return losses.mean()
        mask = mask.to(logits.dtype)
        return (losses * mask).sum() / mask.sum().clamp(min=1.0)


@LOSSES.register("vcr_cross_entropy")
class VCRCrossEntropy(Loss):
    """Cross-entropy over the 4 answer choices plus, when present, over the 4 rationales."""

    def forward(self, batch: Batch, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        loss = F.cross_entropy(outputs["answer_logits"].float(), batch.answer_label.long())
        if "rationale_logits" in outputs:
            loss = loss + F.cross_entropy(outputs["rationale_logits"].float(), batch.rationale_label.long())
        return loss


@LOSSES.register("caption_cross_entropy")
class CaptionCrossEntropy(Loss):
    """Next-token cross-entropy: `caption_logits` (B, L, V) at position t predicts input_ids[t+1]."""

    def forward(self, batch: Batch, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = outputs["caption_logits"][:, :-1].float()
        targets = batch.input_ids[:, 1:].masked_fill(~batch.attention_mask[:, 1:].bool(), -100)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
