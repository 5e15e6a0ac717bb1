"""The Mixture-of-Modality-Experts Transformer block and stack.

Each block is pre-LN: a shared LayerNorm + multi-head self-attention for every token, then one
FFN expert per token (each expert has its own LayerNorm): V-FFN for image tokens, L-FFN for text
tokens, VL-FFN for every token in the fused pass of the top layers. Routing reads a per-token
modality mask, so text and image lengths are free.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

EXPERTS = ("vision", "language", "vision_language")


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch of a sample with probability p."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


class Routing(NamedTuple):
    """Which expert gets which token, worked out once per forward pass from the modality mask.

    kind: "language" (text only), "vision" (image only), "split" (every row is [text; image]
    with the text in the first `split` positions: routed by slicing) or "mask" (any other layout:
    routed by boolean indexing with `is_text`)."""

    kind: str
    split: int = 0
    is_text: torch.Tensor | None = None


def plan_routing(is_text: torch.Tensor) -> Routing:
    """The Routing for a (B, N) bool modality mask (True = text token)."""
    if bool(is_text.all()):
        return Routing("language")
    if not bool(is_text.any()):
        return Routing("vision")
    columns = is_text[0]
    split = int(columns.sum())
    if bool(columns[:split].all()) and bool((is_text == columns).all()):
        return Routing("split", split)
    return Routing("mask", is_text=is_text)


class SelfAttention(nn.Module):
    """Multi-head self-attention through scaled_dot_product_attention (one fused qkv projection)."""

    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden size {hidden} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None, queries: int | None = None) -> torch.Tensor:
        """attn_mask: None (every key is real) or (B, 1, 1, N) bool, True = attend.

        queries: only the first `queries` positions attend (keys and values are all N tokens);
        returns (B, queries, H). The query projection then runs on those rows only."""
        b, n, h = x.shape
        width = h // self.heads
        if queries is None:
            q, k, v = self.qkv(x).view(b, n, 3, self.heads, width).permute(2, 0, 3, 1, 4)
        else:
            weight_q, weight_kv = self.qkv.weight.split([h, 2 * h])
            bias_q, bias_kv = self.qkv.bias.split([h, 2 * h])
            q = F.linear(x[:, :queries], weight_q, bias_q).view(b, -1, self.heads, width).transpose(1, 2)
            k, v = F.linear(x, weight_kv, bias_kv).view(b, n, 2, self.heads, width).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(b, q.shape[2], h))


class Expert(nn.Module):
    """LayerNorm -> Linear -> GELU -> Linear: one modality expert."""

    def __init__(self, hidden: int, ffn: int, dropout: float, eps: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden, eps=eps)
        self.fc1 = nn.Linear(hidden, ffn)
        self.fc2 = nn.Linear(ffn, hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = F.gelu(self.fc1(self.norm(x)))
        if self.dropout.p == 0.0:
            return self.fc2(hidden)
        return self.dropout(self.fc2(self.dropout(hidden)))


class MoMEBlock(nn.Module):
    """Shared attention + modality experts, LayerScale on both branches, stochastic depth."""

    def __init__(self, hidden: int, heads: int, ffn: int, *, has_vl_ffn: bool, shared_ffn: bool,
                 dropout: float, drop_path: float, layer_scale_init: float, eps: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden, eps=eps)
        self.attention = SelfAttention(hidden, heads, dropout)
        self.shared_ffn = shared_ffn
        self.has_vl_ffn = has_vl_ffn
        if shared_ffn:
            self.experts = nn.ModuleDict({"shared": Expert(hidden, ffn, dropout, eps)})
        else:
            names = EXPERTS if has_vl_ffn else EXPERTS[:2]
            self.experts = nn.ModuleDict({name: Expert(hidden, ffn, dropout, eps) for name in names})
        self.gamma_attention = nn.Parameter(torch.full((hidden,), float(layer_scale_init)))
        self.gamma_ffn = nn.Parameter(torch.full((hidden,), float(layer_scale_init)))
        self.drop_path = DropPath(drop_path)

    def expert(self, name: str) -> Expert:
        return self.experts["shared" if self.shared_ffn else name]

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None, routing: Routing | torch.Tensor,
                fused: bool, queries: int | None = None) -> torch.Tensor:
        """attn_mask: None or (B, 1, 1, N) bool; routing: a Routing or the (B, N) bool modality mask
        (of the output rows); `fused` in a VL-FFN block: VL-FFN for all tokens. queries: compute
        only the first `queries` output rows (they still attend to every token)."""
        if isinstance(routing, torch.Tensor):
            routing = plan_routing(routing)
        residual = x if queries is None else x[:, :queries]
        # x + gamma * branch in one op; stochastic depth drops the branch per sample, which
        # commutes with the per-channel gamma
        x = torch.addcmul(residual, self.gamma_attention,
                          self.drop_path(self.attention(self.norm(x), attn_mask, queries)))
        return torch.addcmul(x, self.gamma_ffn, self.drop_path(self.route(x, routing, fused)))

    def route(self, x: torch.Tensor, routing: Routing | torch.Tensor, fused: bool) -> torch.Tensor:
        if isinstance(routing, torch.Tensor):
            routing = plan_routing(routing)
        if fused and self.has_vl_ffn:
            return self.expert("vision_language")(x)
        if routing.kind in ("language", "vision"):
            return self.expert(routing.kind)(x)
        if routing.kind == "split":
            # the usual pair layout [text (padded to one length); image]: slicing (split's backward
            # is one concatenation) instead of the gather/scatter of boolean indexing
            text, image = x.split([routing.split, x.shape[1] - routing.split], dim=1)
            return torch.cat([self.expert("language")(text), self.expert("vision")(image)], dim=1)
        is_text = routing.is_text
        out = x.new_empty(x.shape)
        out[is_text] = self.expert("language")(x[is_text])
        out[~is_text] = self.expert("vision")(x[~is_text])
        return out


class MoMETransformer(nn.Module):
    """A stack of MoME blocks; the top `vl_ffn_layers` blocks carry a VL-FFN; a final LayerNorm."""

    def __init__(self, num_layers: int, hidden: int, heads: int, ffn: int, vl_ffn_layers: int, *,
                 shared_ffn: bool = False, dropout: float = 0.0, drop_path_rate: float = 0.0,
                 layer_scale_init: float = 0.1, eps: float = 1e-6) -> None:
        super().__init__()
        self.vl_start = num_layers - vl_ffn_layers
        rates = torch.linspace(0, drop_path_rate, num_layers).tolist() if num_layers > 1 else [drop_path_rate]
        self.blocks = nn.ModuleList(
            MoMEBlock(hidden, heads, ffn, has_vl_ffn=i >= self.vl_start, shared_ffn=shared_ffn, dropout=dropout,
                      drop_path=rates[i], layer_scale_init=layer_scale_init, eps=eps)
            for i in range(num_layers))
        self.norm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None, is_text: torch.Tensor,
                fused: bool = False, first: int | None = None) -> torch.Tensor:
        """key_mask (B, N) bool, True = real token (None: all real); is_text (B, N) bool.

        first: return only the first `first` positions, (B, first, H). The last block then
        computes just those rows (attending to every token): the same values as slicing the full
        output, without the rest of the last layer (what [CLS]-pooled heads need)."""
        # the mask and the routing are the same in every layer: work them out once
        attn_mask = None if key_mask is None or bool(key_mask.all()) else key_mask[:, None, None, :]
        routing = plan_routing(is_text)
        last = len(self.blocks) - 1
        for index, block in enumerate(self.blocks):
            if first is not None and index == last:
                x = block(x, attn_mask, plan_routing(is_text[:, :first]), fused, queries=first)
            else:
                x = block(x, attn_mask, routing, fused)
        return self.norm(x if first is None else x[:, :first])
