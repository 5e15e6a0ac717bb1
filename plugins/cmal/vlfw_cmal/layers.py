"""A BERT-style (post-LayerNorm) Transformer encoder layer with attention through SDPA."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TransformerLayer(nn.Module):
    """Self-attention then a GELU feed-forward, each with a residual and a LayerNorm after it."""

    def __init__(self, hidden_size: int, num_heads: int, intermediate_size: int | None = None, dropout: float = 0.1,
                 layer_norm_eps: float = 1e-12) -> None:
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not a multiple of num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.attention_output = nn.Linear(hidden_size, hidden_size)
        self.attention_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.feed_forward = nn.Sequential(nn.Linear(hidden_size, intermediate_size or 4 * hidden_size), nn.GELU(),
                                          nn.Linear(intermediate_size or 4 * hidden_size, hidden_size))
        self.output_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.dropout = nn.Dropout(dropout)
        self.attention_dropout = dropout

    def forward(self, states: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """states (B, S, H), mask (B, S) bool (True = a real position) -> (B, S, H)."""
        batch, length, hidden = states.shape
        q, k, v = self.qkv(states).view(batch, length, 3, self.num_heads, hidden // self.num_heads).permute(2, 0, 3, 1, 4)
        attention_mask = None if mask is None else mask[:, None, None, :].to(torch.bool)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask,
                                                  dropout_p=self.attention_dropout if self.training else 0.0)
        attended = attended.transpose(1, 2).reshape(batch, length, hidden)
        states = self.attention_norm(states + self.dropout(self.attention_output(attended)))
        return self.output_norm(states + self.dropout(self.feed_forward(states)))
