"""UMSE (uni-modal semantic encoding): one Transformer layer per modality, each with a leading
learned token ([IMG] for the regions, [TXT] for the words) whose output feeds VTC."""

from __future__ import annotations

import torch
from torch import nn

from vlfw_cmal.layers import TransformerLayer


def box_geometry(boxes: torch.Tensor, image_size: torch.Tensor) -> torch.Tensor:
    """boxes (B, N, 4) xyxy pixels, image_size (B, 2) [w, h] -> (B, N, 7) [x1, y1, x2, y2, w, h, w*h],
    all normalised by the image size."""
    wh = image_size.to(boxes.dtype).clamp(min=1.0)
    xyxy = boxes / torch.cat([wh, wh], dim=-1).unsqueeze(-2)
    width = xyxy[..., 2] - xyxy[..., 0]
    height = xyxy[..., 3] - xyxy[..., 1]
    return torch.cat([xyxy, width[..., None], height[..., None], (width * height)[..., None]], dim=-1)


class VisualUMSE(nn.Module):
    """[IMG] + LayerNorm(FC(region feature) + FC(7-d box)) -> one Transformer layer.

    (Two FCs summed are one FC over the concatenation [feature; box].) Output (B, 1 + N, H):
    position 0 is [IMG], position 1 + i is region i.
    """

    def __init__(self, feature_size: int, hidden_size: int, num_heads: int, intermediate_size: int | None = None,
                 dropout: float = 0.1, layer_norm_eps: float = 1e-12, transformer: bool = True) -> None:
        super().__init__()
        self.feature = nn.Linear(feature_size, hidden_size)
        self.geometry = nn.Linear(7, hidden_size)
        self.norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.image_token = nn.Parameter(torch.zeros(hidden_size))
        nn.init.normal_(self.image_token, std=0.02)
        self.dropout = nn.Dropout(dropout)
        # transformer=False: no Transformer layer, the embeddings go to CMAP as they are (the released code)
        self.layer = TransformerLayer(hidden_size, num_heads, intermediate_size, dropout, layer_norm_eps) if transformer else None

    def forward(self, region_features: torch.Tensor, region_boxes: torch.Tensor, image_size: torch.Tensor,
                region_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (states (B, 1 + N, H), mask (B, 1 + N) bool)."""
        batch, num_regions = region_features.shape[:2]
        regions = self.norm(self.feature(region_features) + self.geometry(box_geometry(region_boxes, image_size)))
        states = torch.cat([self.image_token.expand(batch, 1, -1).to(regions.dtype), regions], dim=1)
        if region_mask is None:
            region_mask = torch.ones(batch, num_regions, dtype=torch.bool, device=states.device)
        mask = torch.cat([torch.ones(batch, 1, dtype=torch.bool, device=states.device), region_mask.bool()], dim=1)
        states = self.dropout(states)
        return (states if self.layer is None else self.layer(states, mask)), mask


class TextualUMSE(nn.Module):
    """FC(word embedding + position embedding) with the tokenizer's first token ([CLS]) replaced by
    a learned [TXT] -> one Transformer layer. Output (B, L, H) aligned with input_ids: position 0
    is [TXT], position j is token j (so anchor token positions index it directly)."""

    def __init__(self, vocab_size: int, hidden_size: int, num_heads: int, max_length: int = 512,
                 intermediate_size: int | None = None, dropout: float = 0.1, layer_norm_eps: float = 1e-12,
                 pad_id: int = 0, transformer: bool = True) -> None:
        super().__init__()
        self.words = nn.Embedding(vocab_size, hidden_size, padding_idx=pad_id)
        self.positions = nn.Embedding(max_length, hidden_size)
        self.project = nn.Linear(hidden_size, hidden_size)
        self.norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.text_token = nn.Parameter(torch.zeros(hidden_size))
        nn.init.normal_(self.text_token, std=0.02)
        self.dropout = nn.Dropout(dropout)
        self.layer = TransformerLayer(hidden_size, num_heads, intermediate_size, dropout, layer_norm_eps) if transformer else None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (states (B, L, H), mask (B, L) bool)."""
        batch, length = input_ids.shape
        if length > self.positions.num_embeddings:
            raise ValueError(f"text of {length} tokens is longer than max_length {self.positions.num_embeddings}")
        positions = torch.arange(length, device=input_ids.device)
        tokens = self.norm(self.project(self.words(input_ids) + self.positions(positions)[None]))
        states = torch.cat([self.text_token.expand(batch, 1, -1).to(tokens.dtype), tokens[:, 1:]], dim=1)
        mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        states = self.dropout(states)
        return (states if self.layer is None else self.layer(states, mask)), mask
