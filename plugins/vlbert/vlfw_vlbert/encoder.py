"""A BERT encoder (post-LayerNorm) whose attention runs through scaled_dot_product_attention.

Module names follow Hugging Face's BertModel (`layer.N.attention.self.query`, ...), so BERT
checkpoints map onto it by name.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LN_EPS = 1e-12


def gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B, T, H), index (B, K) -> (B, K, H)."""
    return x.gather(1, index[..., None].expand(-1, -1, x.shape[-1]))


class _SelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None, queries: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, H) -> (B, T, H); with `queries` (B, K, H) (rows of x) only those attend -> (B, K, H)."""
        b, h = x.shape[0], x.shape[2]
        split = lambda y: y.view(b, -1, self.heads, h // self.heads).transpose(1, 2)  # noqa: E731
        query = split(self.query(x if queries is None else queries))
        key, value = split(self.key(x)), split(self.value(x))
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask,
                                             dropout_p=self.dropout if self.training else 0.0)
        return out.transpose(1, 2).reshape(b, -1, h)


class _DenseNorm(nn.Module):
    """dense -> dropout -> residual add -> LayerNorm (BERT's SelfOutput / Output)."""

    def __init__(self, in_size: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.dense = nn.Linear(in_size, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=LN_EPS)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class _Attention(nn.Module):
    def __init__(self, hidden: int, heads: int, dropout: float, attention_dropout: float) -> None:
        super().__init__()
        self.self = _SelfAttention(hidden, heads, attention_dropout)
        self.output = _DenseNorm(hidden, hidden, dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None, read: torch.Tensor | None = None) -> torch.Tensor:
        if read is None:
            return self.output(self.self(x, attn_mask), x)
        queries = gather_rows(x, read)
        return self.output(self.self(x, attn_mask, queries), queries)


class _Intermediate(nn.Module):
    def __init__(self, hidden: int, intermediate: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, intermediate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class EncoderLayer(nn.Module):
    def __init__(self, hidden: int, heads: int, intermediate: int, dropout: float, attention_dropout: float) -> None:
        super().__init__()
        self.attention = _Attention(hidden, heads, dropout, attention_dropout)
        self.intermediate = _Intermediate(hidden, intermediate)
        self.output = _DenseNorm(intermediate, hidden, dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None, read: torch.Tensor | None = None) -> torch.Tensor:
        """read (B, K): compute only these positions' outputs (every position is still a key)."""
        x = self.attention(x, attn_mask, read)
        return self.output(self.intermediate(x), x)


class Encoder(nn.Module):
    def __init__(self, hidden: int, layers: int, heads: int, intermediate: int, dropout: float,
                 attention_dropout: float) -> None:
        super().__init__()
        self.layer = nn.ModuleList([EncoderLayer(hidden, heads, intermediate, dropout, attention_dropout)
                                    for _ in range(layers)])

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, read: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, H); mask (B, T) bool, True = a real element (keys only are masked); None when
        every element is real (SDPA then runs without a mask). -> (B, T, H), or with `read`
        (B, K) only the states at those positions (B, K, H): the last layer computes no other
        output row (its other positions are keys and values only), which the task would not read."""
        attn_mask = None if mask is None else mask[:, None, None, :]
        if read is not None and not len(self.layer):
            return gather_rows(x, read)
        for index, layer in enumerate(self.layer):
            x = layer(x, attn_mask, read if index == len(self.layer) - 1 else None)
        return x


class Pooler(nn.Module):
    """BERT's pooler: dense + tanh on the first ([CLS]) element."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(states[:, 0]))
