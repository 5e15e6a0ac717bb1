"""Image-text contrastive learning: the symmetric InfoNCE loss with negatives from every rank, and
the ITM hard-negative sampler that reads its similarities.

`image_text_contrastive` computes the loss of the GLOBAL batch on every rank (the features of all
ranks are gathered, the gradient flows into the local rows: vlfw.distributed.gather_with_local_grad),
so its value equals the one-process loss on the concatenated batch and DDP's gradient average is
the global-batch gradient. The temperature is learned when the model gives a `logit_scale`
(log of the inverse temperature, as CLIP / VLMo / FIBER), else fixed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vlfw.data.batch import Batch
from vlfw.distributed import all_gather_padded, gather_with_local_grad
from vlfw.losses.base import Loss
from vlfw.registry import LOSSES


@dataclass
class ContrastiveResult:
    loss: torch.Tensor
    image_to_text: torch.Tensor  # (B_local, B_global) logits of this rank's images against every text, fp32
    text_to_image: torch.Tensor  # (B_local, B_global)
    offset: int                  # global index of this rank's first sample


def image_text_contrastive(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor | None = None,
                           temperature: float | None = None, max_logit_scale: float = 100.0) -> ContrastiveResult:
    """Symmetric InfoNCE between L2-normalised (B, D) image and text features, negatives from
    every rank. Logits: exp(logit_scale) (clamped to `max_logit_scale`) x cosine, or cosine /
    `temperature` when no logit_scale is given."""
    if logit_scale is None and temperature is None:
        raise ValueError("image_text_contrastive needs a logit_scale or a temperature")
    image, text = image.float(), text.float()
    all_image, offset = gather_with_local_grad(image)
    all_text, _ = gather_with_local_grad(text)
    if logit_scale is not None:  # (N, N) global
        logits = (logit_scale.float().exp().clamp(max=max_logit_scale) * all_image) @ all_text.t()
    else:
        logits = (all_image @ all_text.t()) / float(temperature)
    target = torch.arange(len(logits), device=logits.device)
    loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
    rows = slice(offset, offset + len(image))
    return ContrastiveResult(loss, logits[rows].detach(), logits.t()[rows].detach(), offset)


def sample_hard_negatives(similarity: torch.Tensor, offset: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """One global index per row drawn from softmax(similarity) over the global batch, the
    positive excluded (ALBEF / VLMo / FIBER's ITM negatives).

    similarity (B_local, N_global); row i's positive is column offset + i. fp32 throughout.
    """
    sim = similarity.detach().float().clone()
    rows = torch.arange(len(sim), device=sim.device)
    sim[rows, rows + offset] = float("-inf")
    weights = torch.nan_to_num(torch.softmax(sim, dim=1), nan=0.0)
    # a one-sample global batch has no negative: fall back to the positive (labelled 0 anyway)
    empty = weights.sum(dim=1) <= 0
    if bool(empty.any()):
        weights[empty] = 1.0
    return torch.multinomial(weights, 1, generator=generator).squeeze(1)


def gather_rows(tensor: torch.Tensor, index: torch.Tensor, pad_value: float = 0) -> torch.Tensor:
    """Rows `index` (global positions) of `tensor` gathered from every rank, without gradient;
    dims other than the first are padded to the largest rank's."""
    everything, _ = all_gather_padded(tensor, pad_value)
    return everything[index]


def itm_pairs(images: torch.Tensor, text_ids: torch.Tensor, text_mask: torch.Tensor,
              contrast: ContrastiveResult, generator: torch.Generator | None = None, pad_id: int = 0):
    """The 3B ITM pairs: B positives, B (image, hard negative text), B (hard negative image, text).

    Negatives come from the global batch (gathered without gradient) through
    `sample_hard_negatives` of the contrastive similarities. Returns
    (images (3B, ...), text_ids (3B, L), text_mask (3B, L) bool, labels (3B,) 1 = match).
    """
    all_ids, _ = all_gather_padded(text_ids, pad_id)
    all_mask, _ = all_gather_padded(text_mask.long(), 0)
    length = all_ids.shape[1]
    text_ids = F.pad(text_ids, (0, length - text_ids.shape[1]), value=pad_id)
    text_mask = F.pad(text_mask.long(), (0, length - text_mask.shape[1]))
    negative_text = sample_hard_negatives(contrast.image_to_text, contrast.offset, generator)
    negative_image = sample_hard_negatives(contrast.text_to_image, contrast.offset, generator)
    b = len(images)
    pair_images = torch.cat([images, images, gather_rows(images, negative_image).to(images.dtype)])
    pair_ids = torch.cat([text_ids, all_ids[negative_text], text_ids])
    pair_mask = torch.cat([text_mask, all_mask[negative_text], text_mask]).bool()
    labels = torch.cat([torch.ones(b), torch.zeros(2 * b)]).long().to(images.device)
    return pair_images, pair_ids, pair_mask, labels


@LOSSES.register("image_text_contrastive")
class ImageTextContrastive(Loss):
    """Symmetric InfoNCE over outputs["image_embeddings"] / ["text_embeddings"] (B, D), negatives
    gathered over ranks. The temperature is the model's learned `logit_scale` output when it gives
    one (so the optimizer trains it), else the fixed `temperature`."""

    def __init__(self, temperature: float = 0.07, max_logit_scale: float = 100.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"image_text_contrastive: temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.max_logit_scale = float(max_logit_scale)

    def forward(self, batch: Batch, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        image, text = outputs["image_embeddings"], outputs["text_embeddings"]
        if text.dim() != 2:
            raise ValueError("image_text_contrastive trains on one caption per image: text_embeddings must be "
                             f"(B, D), got {tuple(text.shape)}")
        scale = outputs.get("logit_scale")
        if scale is None:
            return image_text_contrastive(image, text, temperature=self.temperature).loss
        return image_text_contrastive(image, text, scale, max_logit_scale=self.max_logit_scale).loss


@LOSSES.register("contrastive")
class Contrastive(Loss):
    """Symmetric InfoNCE over the image/text embedding pairs with a fixed temperature (negatives
    from every rank); `image_text_contrastive` also learns the temperature when the model gives one."""

    def __init__(self, temperature: float = 0.05) -> None:
        super().__init__()
        self.temperature = float(temperature)

    def forward(self, batch: Batch, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return image_text_contrastive(outputs["image_embeddings"], outputs["text_embeddings"],
                                      temperature=self.temperature).loss
