"""The loss interface: forward(batch, outputs) -> scalar tensor."""

from __future__ import annotations

import torch
from torch import nn

from vlfw.data.batch import Batch


class Loss(nn.Module):
    """A loss reads the batch and the model outputs and returns a scalar."""

    def forward(self, batch: Batch, outputs: dict[str, torch.Tensor]) -> torch.Tensor:  # noqa: D401
        raise NotImplementedError
