"""Pre-training objectives of VLMo's own: the MLM head and masked-image modelling. ITC and the ITM
hard negatives are vlfw's (vlfw.losses.contrastive)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
