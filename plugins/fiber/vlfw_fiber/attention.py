"""The cross-attention that fuses one modality into the other (scaled_dot_product_attention)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

KeysValues = tuple[torch.Tensor, torch.Tensor]  # (N, heads, S, head size) each


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(N, T, H) -> (N, heads, T, H / heads)."""
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(N, heads, T, d) -> (N, T, heads * d)."""
    return x.transpose(1, 2).flatten(2)


class CrossAttention(nn.Module):
    """Tokens of width `query_dim` attend to every token of a context of width `context_dim`
    (keys and values projected to `query_dim`); `context_mask` (N, S) True = a real context token."""

    def __init__(self, query_dim: int, context_dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if query_dim % num_heads:
            raise ValueError(f"cross-attention width {query_dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.query = nn.Linear(query_dim, query_dim)
        self.key = nn.Linear(context_dim, query_dim)
        self.value = nn.Linear(context_dim, query_dim)
        self.out = nn.Linear(query_dim, query_dim)
        self.dropout = dropout
        for linear in (self.query, self.key, self.value, self.out):
            nn.init.trunc_normal_(linear.weight, std=0.02)
            nn.init.zeros_(linear.bias)

    def keys_values(self, context: torch.Tensor) -> KeysValues:
        return split_heads(self.key(context), self.num_heads), split_heads(self.value(context), self.num_heads)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, context_mask: torch.Tensor | None = None,
                keys_values: KeysValues | None = None) -> torch.Tensor:
        """x (N, T, query_dim) -> (N, T, query_dim); the context's keys/values may come precomputed."""
        keys, values = keys_values if keys_values is not None else self.keys_values(context)
        mask = None if context_mask is None else context_mask.bool()[:, None, None, :]
        out = F.scaled_dot_product_attention(split_heads(self.query(x), self.num_heads), keys, values, attn_mask=mask,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.out(merge_heads(out))
