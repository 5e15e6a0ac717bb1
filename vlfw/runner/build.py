"""`build_run(config, context)`: every component of a run, built once, in one place.

Builders, their task infos (computed once), the model, each dataset's losses and metrics, the
evaluator and, for training, the batch streams, the wrapped training module, the optimizer,
the scheduler and the update step. The factories below are public (tests and tools use them).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from vlfw.data.multitask import DatasetStream, MultitaskIterator, build_iteration_strategy
from vlfw.data.streaming import StreamingDatasetStream, check_streaming
from vlfw.datasets.base import DatasetBuilder
from vlfw.errors import ConfigError
from vlfw.losses.base import Loss
from vlfw.metrics.base import Metric
from vlfw.models.base import BaseModel
from vlfw.registry import DATASETS, LOSSES, METRICS, MODELS
from vlfw.runner import checkpoint as ckpt
from vlfw.runner.distributed import DistributedContext, unwrap, wrap_model  # noqa: F401  (unwrap: public here)
from vlfw.runner.evaluation import Evaluator
from vlfw.runner.optim import build_optimizer
from vlfw.runner.schedulers import build_scheduler
from vlfw.runner.step import PRECISIONS, UpdateStep, autocast_context
from vlfw.tasks import TaskInfo

log = logging.getLogger("vlfw.runner")
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


def build_task_infos(builders: dict[str, DatasetBuilder]) -> dict[str, TaskInfo]:
    infos = {}
    for name, builder in builders.items():
        info = builder.task_info()
        if not isinstance(info, TaskInfo):
            raise ConfigError(f"dataset builder {name!r} ({type(builder).__name__}.task_info) returned a "
                              f"{type(info).__name__}, not a vlfw.tasks.TaskInfo")
        infos[name] = info
    return infos


def build_model(config: DictConfig, task_infos: dict[str, TaskInfo]) -> BaseModel:
    name = str(config.model)
    node = (config.get("model_config") or {}).get(name)
    return MODELS.get(name)(node if node is not None else OmegaConf.create({}), task_infos)


def build_losses(config: DictConfig, name: str) -> list[tuple[str, Loss]]:
    """(log name, loss) for each entry of dataset_config.<name>.losses; a second loss of the same
    type is logged (and weighted) as `<type>_1`."""
    built = []
    seen: dict[str, int] = {}
    for spec in dataset_config(config, name).get("losses") or []:
        if "type" not in spec:
            raise ConfigError(f"dataset_config.{name}.losses entries need a `type`, got {OmegaConf.to_container(spec)}")
        loss_type = str(spec["type"])
        count = seen.get(loss_type, 0)
        seen[loss_type] = count + 1
        log_name = loss_type if count == 0 else f"{loss_type}_{count}"
        built.append((log_name, LOSSES.get(loss_type)(**dict(spec.get("params") or {}))))
    return built


def build_loss_weights(config: DictConfig, name: str) -> dict[str, float]:
    """dataset_config.<name>.loss_weights: loss-term name -> weight (1 where not named)."""
    weights = dataset_config(config, name).get("loss_weights") or {}
    return {str(k): float(v) for k, v in weights.items()}


def build_metrics(config: DictConfig, name: str, task_info: TaskInfo) -> list[Metric]:
    metrics = []
    for spec in dataset_config(config, name).get("metrics") or []:
        if "type" not in spec:
            raise ConfigError(f"dataset_config.{name}.metrics entries need a `type`")
        metrics.append(METRICS.get(str(spec["type"]))(task_info=task_info, **dict(spec.get("params") or {})))
    return metrics


def gradient_sync(train_model: nn.Module, context: DistributedContext):
    """DDP's no_sync on the micro-steps before the last one of an update (FSDP: its equivalent)."""
    fsdp = context.enabled and context.strategy == "fsdp"

    def sync(enabled: bool):
        if fsdp:
            train_model.set_requires_gradient_sync(enabled)
            return contextlib.nullcontext()
        if enabled or not context.enabled:
            return contextlib.nullcontext()
        module = train_model._orig_mod if hasattr(train_model, "_orig_mod") else train_model
        return module.no_sync()

    return sync


@dataclass
class Run:
    """The built components of one run (see build_run)."""

    config: DictConfig
    context: DistributedContext
    parts: set[str]
    builders: dict[str, DatasetBuilder]
    task_infos: dict[str, TaskInfo]
    model: BaseModel
    evaluator: Evaluator
    train_model: nn.Module
    iterator: MultitaskIterator | None = None
    optimizer: torch.optim.Optimizer | None = None
    scheduler: Any = None
    step: UpdateStep | None = None
    total_updates: int = 0
    updates_per_epoch: int = 1


def build_streams(config: DictConfig, context: DistributedContext, builders: dict[str, DatasetBuilder],
                  pin_memory: bool) -> MultitaskIterator:
    """The training batch stream of every dataset and the multi-task iterator over them."""
    training, world = config.training, context.world_size
    accumulation = int(training.gradient_accumulation_steps)
    batch_sizes = dict(config.multitask.get("batch_sizes") or {})
    streams = {}
    for name, builder in builders.items():
        global_batch = int(batch_sizes.get(name, training.batch_size))
        if global_batch % (world * accumulation):
            raise ConfigError(
                f"the batch size of {name!r} ({global_batch}) must be divisible by ranks x accumulation "
                f"steps ({world} x {accumulation})")
        dataset = builder.build("train")
        stream_class = DatasetStream
        if isinstance(dataset, torch.utils.data.IterableDataset):  # webdataset shards (vlfw.datasets.shards)
            check_streaming(name, dataset)
            stream_class = StreamingDatasetStream
        streams[name] = stream_class(
            name, dataset, builder.collate, global_batch // (world * accumulation),
            world, context.rank, int(config.seed), int(training.num_workers), pin_memory)
    strategy = build_iteration_strategy(config.multitask, {n: len(s.dataset) for n, s in streams.items()},
                                        int(config.seed))
    return MultitaskIterator(streams, strategy, str(config.multitask.mode))


def build_run(config: DictConfig, context: DistributedContext) -> Run:
    """Everything `config.run_type` needs, built once. The model is built right after the task
    infos, from the RNG state the caller seeded (building builders draws no random numbers)."""
    parts = parse_run_type(config.run_type)
    from vlfw.datasets import prepare_sources

    prepare_sources(config)
    builders = build_builders(config)
    task_infos = build_task_infos(builders)
    model = build_model(config, task_infos)
    model.to(context.device)
    training = config.training
    pin_memory = bool(training.pin_memory) and context.device.type == "cuda"
    autocast = autocast_context(context.device, PRECISIONS[str(training.precision)])
    losses = {name: build_losses(config, name) for name in builders}
    metrics = {name: build_metrics(config, name, task_infos[name]) for name in builders}
    evaluation = config.evaluation
    evaluator = Evaluator(
        builders, metrics, context, batch_size=int(evaluation.batch_size or training.batch_size),
        num_workers=int(training.num_workers), pin_memory=pin_memory, progress_bar=bool(training.progress_bar),
        autocast=autocast, predictions_dir=f"{config.save_dir}/predictions",
        generation={name: dict(dataset_config(config, name).get("generation") or {}) for name in builders},
        task_infos=task_infos)
    run = Run(config, context, parts, builders, task_infos, model, evaluator, train_model=model)
    if "train" not in parts:
        return run

    run.iterator = build_streams(config, context, builders, pin_memory)
    accumulation = int(training.gradient_accumulation_steps)
    run.updates_per_epoch = run.iterator.updates_per_epoch(accumulation)
    if training.max_epochs:
        run.total_updates = int(training.max_epochs) * run.updates_per_epoch
    elif training.max_updates:
        run.total_updates = int(training.max_updates)
    else:
        raise ConfigError("set training.max_updates or training.max_epochs")
    checkpoint = config.checkpoint
    if checkpoint.pretrained and not (checkpoint.resume or checkpoint.resume_file):
        ckpt.load_pretrained(model, checkpoint.pretrained, checkpoint.pretrained_key_map)
    run.train_model = wrap_model(model, context, config)
    if training.compile:
        run.train_model = torch.compile(run.train_model)
    run.optimizer = build_optimizer(model, config.optimizer)
    run.scheduler = build_scheduler(run.optimizer, config.scheduler, run.total_updates)
    run.step = UpdateStep(
        run.train_model, model, run.optimizer, run.scheduler, losses,
        loss_weights={name: build_loss_weights(config, name) for name in builders},
        dataset_weights={n: float((config.multitask.get("loss_weights") or {}).get(n, 1.0)) for n in builders},
        device=context.device, precision=str(training.precision), accumulation=accumulation,
        clip_grad_norm=training.clip_grad_norm, nan_policy=str(training.nan_policy),
        max_consecutive_skips=int(training.get("max_consecutive_skips", 10)),
        max_skipped_fraction=float(training.get("max_skipped_fraction", 0.1)),
        gradient_sync=gradient_sync(run.train_model, context), pin_memory=pin_memory)
    return run
