"""The dataset-builder interface: native records -> processors -> Samples."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from omegaconf import DictConfig, OmegaConf

from vlfw.data.batch import Batch, Sample, collate


class DatasetBuilder:
    """Builds one benchmark's splits from its native files.

    Subclasses set DEFAULT_CONFIG (a dict, or a YAML path relative to their module) and
    implement `build(split)`. `task_info()` tells the model which head the dataset needs.
    """

    DEFAULT_CONFIG: dict | str = {}

    def __init__(self, config: DictConfig | dict, name: str) -> None:
        self.config = config if isinstance(config, DictConfig) else OmegaConf.create(config)
        self.name = name

    def build(self, split: str) -> torch.utils.data.Dataset:
        """The dataset of `split` ("train", "val" or "test"), yielding Samples."""
        raise NotImplementedError

    def task_info(self) -> dict[str, Any]:
        """What the model needs to build this dataset's head, e.g. {"task": "vqa", "num_answers": 3129}."""
        raise NotImplementedError

    def collate(self, samples: Sequence[Sample]) -> Batch:
        return collate(samples, self.name)

    def format_predictions(self, batch: Batch, outputs: dict[str, torch.Tensor]) -> list[dict]:
        """Rows of the benchmark's official submission format for one batch."""
        raise NotImplementedError(f"dataset {self.name!r} writes no prediction files")

    def write_predictions(self, predictions: list[dict], path: str) -> None:
        """Write rows from `format_predictions` in the official submission format."""
        raise NotImplementedError(f"dataset {self.name!r} writes no prediction files")
