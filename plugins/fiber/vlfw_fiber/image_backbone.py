"""The image side: torchvision's Swin Transformer, its top blocks wrapped with a gated cross-attention to the text.

The library's SwinTransformerBlock is reused as it is (norm1, shifted-window attention, stochastic
depth, norm2, MLP); `FusedSwinBlock` only inserts ``x = x + gate * CrossAttention(LN(x), text)``
between the window-attention residual and the MLP residual. Without text (dual encoder,
captioning's image pass) a fused block computes exactly the library block.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.swin_transformer import SwinTransformer, SwinTransformerBlock

from vlfw_fiber.attention import CrossAttention


class FusedSwinBlock(nn.Module):
    """A library Swin block plus ``x + fusion_gate * CrossAttention(fusion_norm(x), text, text_mask)``
    after its window-attention residual (every image token attends to every text token)."""

    def __init__(self, block: SwinTransformerBlock, text_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.block = block
        dim = block.norm1.normalized_shape[0]
        self.fusion_norm = nn.LayerNorm(dim, eps=block.norm1.eps)
        self.fusion_attention = CrossAttention(dim, text_dim, block.attn.num_heads, dropout)
        self.fusion_gate = nn.Parameter(torch.zeros(()))  # alpha_i2t: 0 = the unimodal block exactly

    def forward(self, x: torch.Tensor, text: torch.Tensor | None = None,
                text_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, H, W, C) channels-last as torchvision's Swin; text (B, T, D_text) or None (no fusion)."""
        block = self.block
        x = x + block.stochastic_depth(block.attn(block.norm1(x)))
        if text is not None:
            b, h, w, c = x.shape
            fused = self.fusion_attention(self.fusion_norm(x).reshape(b, h * w, c), text, text_mask)
            x = x + self.fusion_gate * fused.view(b, h, w, c)
        return x + block.stochastic_depth(block.mlp(block.norm2(x)))


class SwinBackbone(nn.Module):
    """torchvision's SwinTransformer without its classifier, run block by block.

    `blocks` is the flat, bottom-to-top list of (stage, index in stage); the last `fused_blocks`
    are FusedSwinBlocks. `enter(x, j)` applies the patch merging that precedes block j (when block
    j starts a stage), `block(j)` is the module of block j.
    """

    def __init__(self, swin: SwinTransformer, fused_blocks: int, text_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        features = swin.features
        self.patch_embedding = features[0]  # conv, permute to channels-last, norm
        self.stages = nn.ModuleList(features[i] for i in range(1, len(features), 2))
        self.merges = nn.ModuleList(features[i] for i in range(2, len(features), 2))
        self.norm = swin.norm
        self.blocks = [(s, i) for s, stage in enumerate(self.stages) for i in range(len(stage))]
        self.widths = [stage[0].norm1.normalized_shape[0] for stage in self.stages]
        self.fused_blocks = int(fused_blocks)
        for j in range(len(self.blocks) - self.fused_blocks, len(self.blocks)):
            s, i = self.blocks[j]
            self.stages[s][i] = FusedSwinBlock(self.stages[s][i], text_dim, dropout)

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def out_dim(self) -> int:
        return self.widths[-1]

    def width_of(self, j: int) -> int:
        return self.widths[self.blocks[j][0]]

    def block(self, j: int) -> nn.Module:
        s, i = self.blocks[j]
        return self.stages[s][i]

    def is_fused(self, j: int) -> bool:
        return j >= self.num_blocks - self.fused_blocks

    def ends_stage(self, j: int) -> bool:
        s, i = self.blocks[j]
        return i == len(self.stages[s]) - 1

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> patch tokens (B, H / p, W / p, C) channels-last."""
        return self.patch_embedding(images)

    def enter(self, x: torch.Tensor, j: int) -> torch.Tensor:
        """The input of block j: x, patch-merged when block j starts a stage after the first."""
        s, i = self.blocks[j]
        return self.merges[s - 1](x) if i == 0 and s > 0 else x

    def run_block(self, x: torch.Tensor, j: int, text: torch.Tensor | None = None,
                  text_mask: torch.Tensor | None = None) -> torch.Tensor:
        module = self.block(j)
        return module(x, text, text_mask) if isinstance(module, FusedSwinBlock) else module(x)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The image alone through every block: (final normed tokens (B, H', W', C), stage outputs channels-last)."""
        x = self.embed(images)
        maps = []
        for j in range(self.num_blocks):
            x = self.run_block(self.enter(x, j), j)
            if self.ends_stage(j):
                maps.append(x)
        return self.norm(x), maps
