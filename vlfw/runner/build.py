"""Small factories that turn a run config into components (also used by tests and tools)."""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from vlfw.datasets.base import DatasetBuilder
from vlfw.errors import ConfigError
from vlfw.losses.base import Loss
from vlfw.metrics.base import Metric
from vlfw.models.base import BaseModel
from vlfw.registry import DATASETS, LOSSES, METRICS, MODELS

RUN_PARTS = ("train", "val", "test")


def parse_run_type(run_type: str) -> set[str]:
    """{"train", "val", "test"} subset named by e.g. "train_val_test"."""
    parts = str(run_type).split("_")
    if not parts or any(p not in RUN_PARTS for p in parts) or len(set(parts)) != len(parts):
        raise ConfigError(f"run_type must combine train, val and test with '_' (e.g. train_val_test), got {run_type!r}")
    return set(parts)


def dataset_config(config: DictConfig, name: str) -> DictConfig:
    node = (config.get("dataset_config") or {}).get(name)
    if node is None:
        raise ConfigError(f"dataset_config.{name} is missing; every dataset in `datasets` needs its config node")
    return node


def build_builders(config: DictConfig) -> dict[str, DatasetBuilder]:
    """One builder per name in `config.datasets`, in order."""
    names = [str(n) for n in (config.get("datasets") or [])]
    if not names:
        raise ConfigError("no datasets to run: set `datasets` (e.g. datasets=[vqa2])")
    if len(set(names)) != len(names):
        raise ConfigError(f"`datasets` lists a dataset twice: {names}")
    return {name: DATASETS.get(name)(dataset_config(config, name), name) for name in names}


def build_model(config: DictConfig, task_infos: dict[str, dict[str, Any]]) -> BaseModel:
    name = str(config.model)
    node = (config.get("model_config") or {}).get(name)
    if node is None:
        node = OmegaConf.create({})
    return MODELS.get(name)(node, task_infos)


def build_losses(config: DictConfig, name: str) -> list[tuple[str, float, Loss]]:
    """(log name, weight, loss) for each entry of dataset_config.<name>.losses."""
    built = []
    seen: dict[str, int] = {}
    for spec in dataset_config(config, name).get("losses") or []:
        if "type" not in spec:
            raise ConfigError(f"dataset_config.{name}.losses entries need a `type`, got {OmegaConf.to_container(spec)}")
        loss_type = str(spec["type"])
        params = dict(spec.get("params") or {})
        count = seen.get(loss_type, 0)
        seen[loss_type] = count + 1
        log_name = loss_type if count == 0 else f"{loss_type}_{count}"
        built.append((log_name, float(spec.get("weight", 1.0)), LOSSES.get(loss_type)(**params)))
    return built


def build_metrics(config: DictConfig, name: str, task_info: dict[str, Any]) -> list[Metric]:
    metrics = []
    for spec in dataset_config(config, name).get("metrics") or []:
        if "type" not in spec:
            raise ConfigError(f"dataset_config.{name}.metrics entries need a `type`")
        params = dict(spec.get("params") or {})
        metrics.append(METRICS.get(str(spec["type"]))(task_info=task_info, **params))
    return metrics


def compute_loss(losses: list[tuple[str, float, Loss]], batch: Any, outputs: dict[str, torch.Tensor]
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted sum of the configured losses plus the model's own `loss/...` outputs.

    Returns (total, {name: unweighted value}) with the parts detached.
    """
    total = None
    parts: dict[str, torch.Tensor] = {}
    for log_name, weight, loss in losses:
        value = loss(batch, outputs)
        parts[log_name] = value.detach()
        total = weight * value if total is None else total + weight * value
    for key, value in outputs.items():
        if key.startswith("loss/") and isinstance(value, torch.Tensor):
            parts[key[len("loss/"):]] = value.detach()
            total = value if total is None else total + value
    if total is None:
        raise ConfigError(f"dataset {getattr(batch, 'dataset_name', None)!r} has no loss: configure "
                          "dataset_config.<name>.losses or use a model that returns loss/... outputs")
    return total, parts


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DDP / torch.compile wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model
