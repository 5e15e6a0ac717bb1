"""VL-BERT's input embeddings and the packing of `[CLS] A [SEP] (B [SEP]) [IMG]*N [END]`."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vlfw_vlbert.encoder import LN_EPS

SEGMENT_VISUAL = 2  # segments: A = 0, B = 1, C (visual elements and [END]) = 2


@dataclass
class Packed:
    embeddings: torch.Tensor  # (B, T, H)
    mask: torch.Tensor  # (B, T) True = real element
    visual_positions: torch.Tensor  # (B, M) where each visual element sits in the packed sequence


class Embeddings(nn.Module):
    """token + visual feature + segment + position -> LayerNorm -> dropout.

    Text tokens use the word embedding; visual elements a learned [IMG] embedding and [END] a
    learned [END] embedding. The visual feature term passes through a LayerNorm (one for text
    tokens, one for visual elements) whose gain starts at 0, so training starts as plain BERT.
    All visual elements share the position right after the text; [END] takes the next one.
    """

    def __init__(self, vocab_size: int, hidden: int, max_positions: int, dropout: float) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, hidden, padding_idx=0)
        self.position_embeddings = nn.Embedding(max_positions, hidden)
        self.token_type_embeddings = nn.Embedding(3, hidden)
        self.image_token = nn.Parameter(torch.zeros(hidden))
        self.end_token = nn.Parameter(torch.zeros(hidden))
        self.visual_ln_text = nn.LayerNorm(hidden, eps=LN_EPS)
        self.visual_ln_object = nn.LayerNorm(hidden, eps=LN_EPS)
        self.LayerNorm = nn.LayerNorm(hidden, eps=LN_EPS)
        self.dropout = nn.Dropout(dropout)

    def zero_visual_gain(self) -> None:
        for norm in (self.visual_ln_text, self.visual_ln_object):
            nn.init.zeros_(norm.weight)
            nn.init.zeros_(norm.bias)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None, attention_mask: torch.Tensor,
                visual: torch.Tensor | None = None, visual_valid: torch.Tensor | None = None,
                text_visual: torch.Tensor | None = None) -> Packed:
        """input_ids (B, L) with padding at the end; visual (B, M, H) projected RoI features
        (element 0 = the whole image); text_visual (B, L, H): the visual feature each text token
        carries (default: the whole image's)."""
        b, length = input_ids.shape
        device = input_ids.device
        text_mask = attention_mask.bool()
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        text = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids) \
            + self.position_embeddings(torch.arange(length, device=device))[None]
        if visual is None:
            pieces, valid = [text], [text_mask]
        else:
            m = visual.shape[1]
            if text_visual is None:
                text_visual = visual[:, :1].expand(-1, length, -1)
            text = text + self.visual_ln_text(text_visual)
            after = text_mask.sum(1)  # (B,) the first position after the text
            segment = self.token_type_embeddings.weight[SEGMENT_VISUAL]
            objects = self.image_token + segment + self.visual_ln_object(visual) \
                + self.position_embeddings(after)[:, None]
            end = (self.end_token + segment + self.position_embeddings(after + 1))[:, None]
            pieces = [text, objects.to(text.dtype), end.to(text.dtype)]
            valid = [text_mask, visual_valid.bool() if visual_valid is not None else
                     torch.ones(b, m, dtype=torch.bool, device=device), torch.ones(b, 1, dtype=torch.bool, device=device)]
        embeddings = torch.cat(pieces, dim=1)
        valid_all = torch.cat(valid, dim=1)
        # pack out padding: real elements first, in their order (text, visual, [END])
        order = torch.argsort((~valid_all).to(torch.int8), dim=1, stable=True)
        total = int(valid_all.sum(1).max())
        total = max(total, length)  # text states stay at [:, :L]
        keep = order[:, :total]
        packed = embeddings.gather(1, keep[..., None].expand(-1, -1, embeddings.shape[-1]))
        mask = valid_all.gather(1, keep)
        where = torch.empty_like(order).scatter_(1, order, torch.arange(order.shape[1], device=device).expand(b, -1))
        visual_positions = where[:, length:length + (0 if visual is None else visual.shape[1])].clamp(max=total - 1)
        return Packed(self.dropout(self.LayerNorm(packed)), mask, visual_positions)
