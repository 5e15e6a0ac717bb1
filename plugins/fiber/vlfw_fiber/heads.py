"""Heads of FIBER's own: the retrieval embedding head (FIBER projects, the head normalises) and the MLM / LM head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vlfw.modules.heads import Head
from vlfw.registry import HEADS


@HEADS.register("fiber_embedding")
class FIBEREmbeddingHead(Head):
    """image_pooled / text_pooled (already through FIBER's ITC poolers) -> L2-normalised embeddings;
    the learned `logit_scale` passes on to the loss. The poolers live in the model so that the
    pre-training ITC weights carry over to retrieval."""

    reads = ("image_pooled", "text_pooled")

    def forward(self, features, batch):
        outputs = {"image_embeddings": F.normalize(features["image_pooled"], dim=-1),
                   "text_embeddings": F.normalize(features["text_pooled"], dim=-1)}
        if "logit_scale" in features:
            outputs["logit_scale"] = features["logit_scale"]
        return outputs


class LanguageModelHead(nn.Module):
    """Linear, GELU, LayerNorm, then a decoder to the vocabulary (not tied to the word embeddings):
    the MLM head in pre-training, the LM head of the captioning decoder."""

    def __init__(self, hidden: int, vocab_size: int, eps: float = 1e-12) -> None:
        super().__init__()
        self.transform = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.LayerNorm(hidden, eps=eps))
        self.decoder = nn.Linear(hidden, vocab_size)
        for linear in (self.transform[0], self.decoder):
            nn.init.trunc_normal_(linear.weight, std=0.02)
            nn.init.zeros_(linear.bias)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(states))

    def masked_loss(self, states: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over the masked positions only (labels -100 elsewhere)."""
        selected = labels != -100
        if not bool(selected.any()):
            return states.sum() * 0.0
        return F.cross_entropy(self(states[selected]).float(), labels[selected])
