"""The two backbones run three ways on one set of weights: fused, dual (unimodal) and as a captioner.

Fused pass: the image runs its bottom N - K Swin blocks and the text its bottom L - K layers alone;
then, for k = 0 .. K-1, image block N - K + k and text layer L - K + k update IN PARALLEL, each
cross-attending to the OTHER side's state before this pair of layers (the image block to the text
that enters text layer L - K + k, the text layer to the image tokens that enter image block N - K + k,
patch-merged when that block starts a stage).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from vlfw_fiber.image_backbone import SwinBackbone
from vlfw_fiber.text_backbone import BertBackbone, key_mask


@dataclass
class Encoded:
    """What a pass gives: image tokens (B, H', W', C) after Swin's final norm, the stage outputs
    (channels-last, raw: no final norm), text states (B, T, D) and the text mask (B, T) bool."""

    image: torch.Tensor
    text: torch.Tensor | None
    text_mask: torch.Tensor | None
    image_maps: list[torch.Tensor] = field(default_factory=list)

    @property
    def image_tokens(self) -> torch.Tensor:
        """(B, H' * W', C)."""
        return self.image.flatten(1, 2)


class FusionEncoder(nn.Module):
    """Swin (image) and BERT (text), the top `fusion_layers` of each paired one-to-one from the top."""

    def __init__(self, image: SwinBackbone, text: BertBackbone, fusion_layers: int) -> None:
        super().__init__()
        self.image = image
        self.text = text
        self.fusion_layers = int(fusion_layers)

    def fused(self, images: torch.Tensor, input_ids: torch.Tensor, text_mask: torch.Tensor,
              fuse: bool = True) -> Encoded:
        """Image and text together (fuse=False: side by side, without cross-attention; the same as
        `encode_image` and `encode_text`)."""
        image, text = self.image, self.text
        k = self.fusion_layers if fuse else 0
        first_image, first_text = image.num_blocks - k, text.num_layers - k
        maps: list[torch.Tensor] = []
        x = image.embed(images)
        for j in range(first_image):
            x = image.run_block(image.enter(x, j), j)
            if image.ends_stage(j):
                maps.append(x)
        mask = key_mask(text_mask)
        t = text.embed(input_ids)
        for i in range(first_text):
            t, _ = text.layers[i](t, mask)
        for step in range(k):
            j, i = first_image + step, first_text + step
            x_in = image.enter(x, j)
            x = image.run_block(x_in, j, t, text_mask)                 # the text before layer i
            t, _ = text.layers[i](t, mask, image=x_in.flatten(1, 2))  # the image before block j
            if image.ends_stage(j):
                maps.append(x)
        return Encoded(image.norm(x), t, text_mask, maps)

    def encode_image(self, images: torch.Tensor) -> Encoded:
        """The image alone through the whole Swin (dual encoder; captioning's memory)."""
        final, maps = self.image(images)
        return Encoded(final, None, None, maps)

    def encode_text(self, input_ids: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """The text alone, bidirectional: (B, T, D)."""
        return self.text(input_ids, text_mask)
