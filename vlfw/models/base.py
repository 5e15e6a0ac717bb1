"""BaseModel: the class every vlfw model derives from."""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from vlfw.data.batch import Batch


class BaseModel(nn.Module):
    """A model built from its config node and the task info of every dataset it serves.

    `task_infos` maps dataset name -> the builder's `task_info()`; in a multi-task run
    `batch.dataset_name` picks the head. `forward(batch)` returns a dict of tensors; when the
    model computes its own losses (pre-training objectives), it returns them under keys
    starting with "loss/" and the runner adds them up.
    """

    DEFAULT_CONFIG: dict | str = {}

    def __init__(self, config: DictConfig | dict, task_infos: dict[str, dict[str, Any]]) -> None:
        super().__init__()
        self.config = config if isinstance(config, DictConfig) else OmegaConf.create(config)
        self.task_infos = dict(task_infos)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:  # noqa: D401
        raise NotImplementedError

    def pretrained_key_map(self) -> dict[str, str]:
        """Prefix renames applied when initialising from another model's checkpoint."""
        return {}
