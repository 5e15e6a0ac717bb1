"""CMAI (the Transformer over the hybrid sequence) and CMAC / AMC (associative mapping
classification): each masked or swapped slot recovers its own original identity from what now
sits there. The word slot j (holding region i's state) predicts the word j through an MLP over
the vocabulary; the region slot i (holding word j's state) predicts region i's detector class
through an FC over the classes. (The reverse reading, predicting a word from a slot that holds
that word's own embedding, is trivial and not done.)"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vlfw_cmal.cmap import HybridSequence
from vlfw_cmal.layers import TransformerLayer


class CrossModalAssociativeInteraction(nn.Module):
    """CMAI: `num_layers` Transformer layers over the CMAP embeddings (the paper's base: 12)."""

    def __init__(self, hidden_size: int, num_layers: int = 12, num_heads: int = 12, intermediate_size: int | None = None,
                 dropout: float = 0.1, layer_norm_eps: float = 1e-12) -> None:
        super().__init__()
        self.layers = nn.ModuleList(TransformerLayer(hidden_size, num_heads, intermediate_size, dropout, layer_norm_eps)
                                    for _ in range(num_layers))

    def forward(self, embeddings: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        states = embeddings
        for layer in self.layers:
            states = layer(states, mask)
        return states


def amc_targets(hybrid: HybridSequence, input_ids: torch.Tensor, region_class_probs: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(rows (P,), word targets (P,), region targets (P,)) for the P masked anchors: the id of the
    word's first token and the detector's argmax class of the region."""
    rows = hybrid.masked.nonzero().flatten()
    samples = hybrid.rows[rows]
    words = input_ids[samples, hybrid.token_index[rows]]
    regions = region_class_probs[samples, hybrid.region_index[rows]].argmax(dim=-1)
    return rows, words, regions


class CrossModalAssociativeClassifier(nn.Module):
    """CMAC: MLP(word slot) -> vocabulary logits, FC(region slot) -> detector class logits."""

    def __init__(self, hidden_size: int, vocab_size: int, num_classes: int, layer_norm_eps: float = 1e-12) -> None:
        super().__init__()
        self.word = nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.GELU(),
                                  nn.LayerNorm(hidden_size, eps=layer_norm_eps), nn.Linear(hidden_size, vocab_size))
        self.region = nn.Linear(hidden_size, num_classes)

    def forward(self, states: torch.Tensor, hybrid: HybridSequence, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """states (R, S, H) from CMAI; rows (P,) of masked anchors -> (word logits (P, V), region logits (P, C))."""
        word_states = states[rows, hybrid.word_slot[rows]]
        region_states = states[rows, hybrid.region_slot[rows]]
        return self.word(word_states), self.region(region_states)


def amc_loss(word_logits: torch.Tensor, region_logits: torch.Tensor, word_targets: torch.Tensor,
             region_targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """Cross-entropy of both recoveries (0 when no anchor was masked, keeping the graph)."""
    if word_targets.numel() == 0:
        zero = word_logits.sum() * 0.0 + region_logits.sum() * 0.0
        return {"amc_word": zero, "amc_region": zero}
    return {"amc_word": F.cross_entropy(word_logits.float(), word_targets),
            "amc_region": F.cross_entropy(region_logits.float(), region_targets)}
