"""Pre-training objectives: ITC (cross-rank), ITM with global hard negatives, MLM, masked-image modelling."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vlfw_vlmo.distributed import all_gather_padded, gather_with_local_grad


@dataclass
class ContrastiveResult:
    loss: torch.Tensor
    image_to_text: torch.Tensor  # (B_local, B_global) scaled logits, fp32
    text_to_image: torch.Tensor  # (B_local, B_global)
    offset: int                  # global index of this rank's first sample


def contrastive_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor,
                     max_scale: float = 100.0) -> ContrastiveResult:
    """Symmetric InfoNCE between L2-normalised (B, D) features; negatives from every rank.

    Each rank computes the loss of the whole global batch, so the value equals the single-process
    loss on the concatenated batch; see distributed.py for the gradient.
    """
    image, text = image.float(), text.float()
    all_image, offset = gather_with_local_grad(image)
    all_text, _ = gather_with_local_grad(text)
    scale = logit_scale.float().exp().clamp(max=max_scale)
    logits = scale * all_image @ all_text.t()  # (N, N) global
    target = torch.arange(len(logits), device=logits.device)
    loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
    rows = slice(offset, offset + len(image))
    return ContrastiveResult(loss, logits[rows].detach(), logits.t()[rows].detach(), offset)


def sample_hard_negatives(similarity: torch.Tensor, offset: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """One index per row drawn from softmax(similarity) over the global batch, positives excluded.

    similarity (B_local, N_global); row i's positive is column offset + i. fp32 throughout.
    """
    sim = similarity.detach().float()
    rows = torch.arange(len(sim), device=sim.device)
    sim = sim.clone()
    sim[rows, rows + offset] = float("-inf")
    weights = torch.softmax(sim, dim=1)
    weights = torch.nan_to_num(weights, nan=0.0)
    # a one-sample global batch has no negative: fall back to the positive (labelled 0 anyway)
    empty = weights.sum(dim=1) <= 0
    if bool(empty.any()):
        weights[empty] = 1.0
    return torch.multinomial(weights, 1, generator=generator).squeeze(1)


def itm_pairs(images: torch.Tensor, text_ids: torch.Tensor, text_mask: torch.Tensor,
              contrast: ContrastiveResult, generator: torch.Generator | None = None):
    """The 3B ITM pairs: B positives, B (image, hard negative text), B (hard negative image, text).

    Negatives come from the global batch (gathered without gradient). Returns
    (images (3B, ...), text_ids (3B, L), text_mask (3B, L), labels (3B,)).
    """
    all_images, _ = all_gather_padded(images)
    all_ids, _ = all_gather_padded(text_ids, 0)
    all_mask, _ = all_gather_padded(text_mask.long(), 0)
    length = all_ids.shape[1]
    text_ids = F.pad(text_ids, (0, length - text_ids.shape[1]))
    text_mask = F.pad(text_mask.long(), (0, length - text_mask.shape[1]))
    negative_text = sample_hard_negatives(contrast.image_to_text, contrast.offset, generator)
    negative_image = sample_hard_negatives(contrast.text_to_image, contrast.offset, generator)
    b = len(images)
    pair_images = torch.cat([images, images, all_images[negative_image].to(images.dtype)])
    pair_ids = torch.cat([text_ids, all_ids[negative_text], text_ids])
    pair_mask = torch.cat([text_mask, all_mask[negative_text], text_mask]).bool()
    labels = torch.cat([torch.ones(b), torch.zeros(2 * b)]).long().to(images.device)
    return pair_images, pair_ids, pair_mask, labels


class MaskedLanguageModelHead(nn.Module):
    """Transform (Linear, GELU, LayerNorm) and a decoder tied to the word embeddings."""

    def __init__(self, hidden: int, word_embeddings: nn.Embedding, eps: float) -> None:
        super().__init__()
        self.transform = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.LayerNorm(hidden, eps=eps))
        self.word_embeddings = [word_embeddings]  # a list: tied, not registered twice
        self.bias = nn.Parameter(torch.zeros(word_embeddings.num_embeddings))

    def forward(self, states: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over the masked positions only (labels -100 elsewhere)."""
        selected = labels != -100
        if not bool(selected.any()):
            return states.sum() * 0.0
        hidden = self.transform(states[selected])
        logits = hidden @ self.word_embeddings[0].weight.t() + self.bias
        return F.cross_entropy(logits.float(), labels[selected])


def random_patch_mask(batch: int, patches: int, ratio: float, device: torch.device,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, P) bool with round(ratio * P) (at least one) masked patches per image."""
    count = max(1, int(round(ratio * patches)))
    noise = torch.rand(batch, patches, generator=generator, device=device)
    order = noise.argsort(dim=1)
    mask = torch.zeros(batch, patches, dtype=torch.bool, device=device)
    mask.scatter_(1, order[:, :count], True)
    return mask


def patch_targets(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, P, patch*patch*3) pixels of each patch, normalised per patch (mean 0, variance 1)."""
    b, c, h, w = images.shape
    p = patch_size
    patches = images.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), p * p * c)
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)
    return (patches - mean) / (var + 1e-6).sqrt()
