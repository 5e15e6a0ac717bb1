"""The text side: a `transformers` BertModel's embeddings and layers, the top layers with a gated
cross-attention to the image.

`FusedTextLayer` reuses the library BertLayer's modules (query/key/value, the attention output
dense + dropout + LayerNorm, the intermediate and output FFN) and computes its self-attention through
scaled_dot_product_attention, so that it can take a causal mask and a KV cache (captioning) without
depending on a transformers version's attention and cache API. A fused layer computes
``LN(x + sa + fusion_gate * CrossAttention(sa, image))``, sa the self-attention output; gate 0 (its
init) is BERT's ``LN(x + sa)`` exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertModel

from vlfw_fiber.attention import CrossAttention, KeysValues, merge_heads, split_heads


class FusedTextLayer(nn.Module):
    """A BertLayer; with `image_dim` also a cross-attention to image tokens of that width, gated."""

    def __init__(self, layer: nn.Module, image_dim: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        self.layer = layer
        attention = layer.attention.self
        self.num_heads = attention.num_attention_heads
        self.image_dim = image_dim
        if image_dim is not None:
            hidden = attention.query.in_features
            self.fusion_attention = CrossAttention(hidden, image_dim, self.num_heads, dropout)
            self.fusion_gate = nn.Parameter(torch.zeros(()))  # alpha_t2i

    @property
    def fused(self) -> bool:
        return self.image_dim is not None

    def self_keys_values(self, x: torch.Tensor) -> KeysValues:
        attention = self.layer.attention.self
        return split_heads(attention.key(x), self.num_heads), split_heads(attention.value(x), self.num_heads)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, image: torch.Tensor | None = None,
                image_keys_values: KeysValues | None = None,
                past: KeysValues | None = None) -> tuple[torch.Tensor, KeysValues]:
        """x (N, T, D); mask broadcastable to (N, heads, T, S), True = attend; image tokens (N, P, image_dim)
        or their precomputed keys/values fuse the layer (None: the plain BERT layer). `past`: the cached
        self-attention keys/values of earlier positions. Returns (output, this layer's keys/values)."""
        attention = self.layer.attention
        keys, values = self.self_keys_values(x)
        if past is not None:
            keys, values = torch.cat([past[0], keys], dim=2), torch.cat([past[1], values], dim=2)
        query = split_heads(attention.self.query(x), self.num_heads)
        dropout = attention.self.dropout.p if self.training else 0.0
        context = F.scaled_dot_product_attention(query, keys, values, attn_mask=mask, dropout_p=dropout)
        sa = attention.output.dropout(attention.output.dense(merge_heads(context)))
        h = x + sa
        if self.fused and (image is not None or image_keys_values is not None):
            h = h + self.fusion_gate * self.fusion_attention(sa, image, keys_values=image_keys_values)
        h = attention.output.LayerNorm(h)
        return self.layer.output(self.layer.intermediate(h), h), (keys, values)


class BertBackbone(nn.Module):
    """A BertModel's embeddings and layers; the last len(image_dims) layers are fused, layer
    L - K + i with image tokens of width image_dims[i]."""

    def __init__(self, bert: BertModel, image_dims: list[int], dropout: float = 0.0) -> None:
        super().__init__()
        self.embeddings = bert.embeddings
        layers = list(bert.encoder.layer)
        first = len(layers) - len(image_dims)
        self.layers = nn.ModuleList(
            FusedTextLayer(layer, image_dims[i - first] if i >= first else None, dropout) for i, layer in enumerate(layers))
        self.hidden_size = int(bert.config.hidden_size)
        self.max_positions = int(bert.config.max_position_embeddings)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def embed(self, input_ids: torch.Tensor, start: int = 0) -> torch.Tensor:
        length = input_ids.shape[1]
        if start + length > self.max_positions:
            raise ValueError(f"fiber: text of {start + length} tokens exceeds max_text_length={self.max_positions}; "
                             f"raise model_config.fiber.max_text_length")
        positions = torch.arange(start, start + length, device=input_ids.device)[None].expand_as(input_ids)
        return self.embeddings(input_ids=input_ids, token_type_ids=torch.zeros_like(input_ids), position_ids=positions)

    def forward(self, input_ids: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """The text alone (bidirectional, no fusion): (B, T, D)."""
        x = self.embed(input_ids)
        mask = key_mask(text_mask)
        for layer in self.layers:
            x, _ = layer(x, mask)
        return x


def key_mask(text_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) True = real token -> (B, 1, 1, T) for scaled_dot_product_attention."""
    return text_mask.bool()[:, None, None, :]
