"""Image and text embeddings: patches + [I_CLS] + position + image type; WordPiece + position + text type."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ImageEmbeddings(nn.Module):
    """Conv patch embedding, a learned [I_CLS], a learned position table (interpolated bicubically
    when the input size differs from `image_size`) and the image type embedding."""

    def __init__(self, hidden: int, image_size: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.grid = image_size // patch_size
        self.patch = nn.Conv2d(3, hidden, kernel_size=patch_size, stride=patch_size)
        self.cls = nn.Parameter(torch.zeros(1, 1, hidden))
        self.position = nn.Parameter(torch.zeros(1, 1 + self.grid * self.grid, hidden))
        self.image_type = nn.Parameter(torch.zeros(hidden))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, hidden))  # masked image modelling
        for p in (self.cls, self.position, self.image_type, self.mask_token):
            nn.init.trunc_normal_(p, std=0.02)

    def positions(self, height: int, width: int) -> torch.Tensor:
        if (height, width) == (self.grid, self.grid):
            return self.position
        cls, grid = self.position[:, :1], self.position[:, 1:]
        grid = grid.reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(height, width), mode="bicubic", align_corners=False)
        return torch.cat([cls, grid.flatten(2).transpose(1, 2)], dim=1)

    def forward(self, images: torch.Tensor, patch_mask: torch.Tensor | None = None) -> torch.Tensor:
        """images (B, 3, H, W) -> (B, 1 + P, hidden); patch_mask (B, P) True = replace by [MASK]."""
        x = self.patch(images)
        height, width = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)
        if patch_mask is not None:
            x = torch.where(patch_mask[..., None], self.mask_token.to(x.dtype), x)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1)
        return x + self.positions(height, width) + self.image_type


class TextEmbeddings(nn.Module):
    """LayerNorm(word + position) + text type. [CLS]/[SEP] from the tokenizer are [T_CLS]/[T_SEP]."""

    def __init__(self, vocab_size: int, hidden: int, max_length: int, eps: float, pad_id: int = 0) -> None:
        super().__init__()
        self.word = nn.Embedding(vocab_size, hidden, padding_idx=pad_id)
        self.position = nn.Embedding(max_length, hidden)
        self.norm = nn.LayerNorm(hidden, eps=eps)
        self.text_type = nn.Parameter(torch.zeros(hidden))
        for p in (self.word.weight, self.position.weight, self.text_type):
            nn.init.trunc_normal_(p, std=0.02)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        length = input_ids.shape[1]
        if length > self.position.num_embeddings:
            raise ValueError(f"vlmo: text of {length} tokens exceeds max_text_length="
                             f"{self.position.num_embeddings}; raise model_config.vlmo.max_text_length")
        positions = torch.arange(length, device=input_ids.device)
        return self.norm(self.word(input_ids) + self.position(positions)) + self.text_type
