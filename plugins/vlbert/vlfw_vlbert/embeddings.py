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
    padded: bool = True  # whether mask has any False (attention must be masked)


class Embeddings(nn.Module):
    """token + visual feature + segment + position -> LayerNorm -> dropout.

    Text tokens use the word embedding; visual elements a learned [IMG] embedding and [END] a
    learned [END] embedding. The visual feature term passes through a LayerNorm (one for text
    tokens, one for visual elements) whose gains the model sets (`init_visual_gain`: the text
    tokens' at 0, so their embeddings start as plain BERT's).
    All visual elements share the position right after the text; [END] takes the next one.
    """

    def __init__(self, vocab_size: int, hidden: int, max_positions: int, dropout: float, pad_id: int = 0) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, hidden, padding_idx=pad_id)
        self.position_embeddings = nn.Embedding(max_positions, hidden)
        self.token_type_embeddings = nn.Embedding(3, hidden)
        self.image_token = nn.Parameter(torch.zeros(hidden))
        self.end_token = nn.Parameter(torch.zeros(hidden))
        self.visual_ln_text = nn.LayerNorm(hidden, eps=LN_EPS)
        self.visual_ln_object = nn.LayerNorm(hidden, eps=LN_EPS)
        self.LayerNorm = nn.LayerNorm(hidden, eps=LN_EPS)
        self.dropout = nn.Dropout(dropout)

    def init_visual_gain(self, text: float, objects: float) -> None:
        """The visual LayerNorms' gains start at these values (biases at 0)."""
        for norm, gain in ((self.visual_ln_text, text), (self.visual_ln_object, objects)):
            nn.init.constant_(norm.weight, float(gain))
            nn.init.zeros_(norm.bias)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None, attention_mask: torch.Tensor,
                visual: torch.Tensor | None = None, visual_valid: torch.Tensor | None = None,
                text_visual_index: torch.Tensor | None = None) -> Packed:
        """input_ids (B, L) with padding at the end; visual (B, M, H) projected RoI features
        (element 0 = the whole image); text_visual_index (B, L): the visual element whose feature
        each text token carries (default: element 0, the whole image)."""
        b, length = input_ids.shape
        device = input_ids.device
        text_mask = attention_mask.bool()
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        text = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids) \
            + self.position_embeddings.weight[:length]
        m = 0 if visual is None else visual.shape[1]
        if visual is None:
            embeddings, valid_all = text, text_mask
        else:
            # the LayerNorm works per element, so it runs on the M visual elements (or only the whole
            # image's) and the result is gathered / broadcast to the tokens, not once per token
            if text_visual_index is None:
                text = text + self.visual_ln_text(visual[:, :1])
            else:
                carried = self.visual_ln_text(visual)
                text = text + carried.gather(1, text_visual_index[..., None].expand(-1, -1, carried.shape[-1]))
            after = text_mask.sum(1)  # (B,) the first position after the text
            segment = self.token_type_embeddings.weight[SEGMENT_VISUAL]
            objects = self.image_token + segment + self.visual_ln_object(visual) \
                + self.position_embeddings(after)[:, None]
            end = (self.end_token + segment + self.position_embeddings(after + 1))[:, None]
            embeddings = torch.cat([text, objects.to(text.dtype), end.to(text.dtype)], dim=1)
            visual_valid = visual_valid.bool() if visual_valid is not None else torch.ones(b, m, dtype=torch.bool, device=device)
            valid_all = torch.cat([text_mask, visual_valid, torch.ones(b, 1, dtype=torch.bool, device=device)], dim=1)
        counts = valid_all.sum(1)
        fewest, most = torch.stack([counts.min(), counts.max()]).tolist()
        if fewest == valid_all.shape[1]:  # no padding anywhere: the sequence is already packed
            positions = torch.arange(length, length + m, device=device).expand(b, -1)
            return Packed(self.dropout(self.LayerNorm(embeddings)), valid_all, positions, padded=False)
        # pack out padding: real elements first, in their order (text, visual, [END])
        order = torch.argsort((~valid_all).to(torch.int8), dim=1, stable=True)
        total = max(int(most), length)  # text states stay at [:, :L]
        keep = order[:, :total]
        packed = embeddings.gather(1, keep[..., None].expand(-1, -1, embeddings.shape[-1]))
        mask = valid_all.gather(1, keep)
        where = torch.empty_like(order).scatter_(1, order, torch.arange(order.shape[1], device=device).expand(b, -1))
        visual_positions = where[:, length:length + m].clamp(max=total - 1)
        return Packed(self.dropout(self.LayerNorm(packed)), mask, visual_positions, padded=fewest < total)
