"""Toy components for the runner tests, registered in-process (not through a plugin), and a
script entry point: `python runner_toys.py SAVE_DIR key=value ...` runs vlfw.runner.run (through
the command line's error handling: one line and exit code 2 on errors, 143 when preempted)."""

from __future__ import annotations

import errno
import json
import os
import signal
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch import nn

from vlfw.data.batch import Sample
from vlfw.datasets.base import DatasetBuilder
from vlfw.losses.base import Loss
from vlfw.metrics.base import Metric
from vlfw.models.base import BaseModel, provides
from vlfw.registry import CALLBACKS, DATASETS, LOSSES, METRICS, MODELS
from vlfw.runner.hooks import Hook
from vlfw.tasks import TaskInfo


class ToyDataset(torch.utils.data.Dataset):
    """Fixed features per index plus noise drawn from (seed, epoch, index)."""

    def __init__(self, size: int, dim: int, num_classes: int, seed: int, split: str, nan_index: int | None = None,
                 crash_index: int | None = None):
        generator = torch.Generator().manual_seed(seed * 7 + {"train": 0, "val": 1, "test": 2}[split])
        self.features = torch.randn(size, dim, generator=generator)
        projection = torch.randn(dim, num_classes, generator=torch.Generator().manual_seed(seed))
        self.labels = (self.features @ projection).argmax(-1)
        self.seed, self.epoch, self.split, self.nan_index = seed, 0, split, nan_index
        self.crash_index = crash_index  # a bug (not a vlfw error) in loading this training sample

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> Sample:
        features = self.features[index].clone()
        if self.split == "train":
            noise_gen = torch.Generator().manual_seed((self.seed * 1000 + self.epoch) * 100_000 + index)
            features += 0.1 * torch.randn(features.shape, generator=noise_gen)
            if self.crash_index is not None and index == self.crash_index:
                raise RuntimeError(f"toy crash at index {index}")
            if self.nan_index is not None and index == self.nan_index:
                features[0] = float("nan")
        return Sample(index=index, id=f"{self.split}-{index}", split=self.split, features=features,
                      label=self.labels[index])


@DATASETS.register("toy_dataset")
class ToyBuilder(DatasetBuilder):
    DEFAULT_CONFIG = {
        "size": 48, "dim": 8, "num_classes": 3, "seed": 0, "nan_index": None, "crash_index": None,
        "losses": [{"type": "toy_cross_entropy", "params": {}}],
        "loss_weights": {},
        "metrics": [{"type": "toy_accuracy", "params": {}}],
    }

    def build(self, split: str):
        size = int(self.config.size) if split == "train" else max(7, int(self.config.size) // 3)
        return ToyDataset(size, int(self.config.dim), int(self.config.num_classes), int(self.config.seed), split,
                          self.config.nan_index if split == "train" else None,
                          self.config.crash_index if split == "train" else None)

    def task_info(self) -> TaskInfo:
        return TaskInfo(task="classification", dataset=self.name, num_labels=int(self.config.num_classes),
                        extra={"dim": int(self.config.dim)})

    def format_predictions(self, batch, outputs):
        return [{"id": i, "label": int(p)} for i, p in zip(batch.id, outputs["logits"].argmax(-1).tolist())]

    def write_predictions(self, predictions, path):
        Path(path).write_text(json.dumps(predictions))


@DATASETS.register("toy_dataset_b")
class ToyBuilderB(ToyBuilder):
    """A second toy benchmark (for multi-task runs)."""


@MODELS.register("toy_model")
class ToyModel(BaseModel):
    # nan_gradient_at: the n-th training forward (1-based) gets a finite loss but a NaN gradient
    DEFAULT_CONFIG = {"hidden": 16, "dropout": 0.1, "nan_gradient_at": None}

    def __init__(self, config, task_infos):
        super().__init__(config, task_infos)
        self.forwards = 0
        dim = next(iter(task_infos.values())).extra["dim"]
        self.encoder = nn.Sequential(nn.Linear(dim, int(self.config.hidden)), nn.LayerNorm(int(self.config.hidden)),
                                     nn.ReLU(), nn.Dropout(float(self.config.dropout)))
        self.toy_heads = nn.ModuleDict({name: nn.Linear(int(self.config.hidden), info.num_labels)
                                        for name, info in task_infos.items()})

    @provides("classification")
    def logits(self, batch):
        logits = self.toy_heads[batch.dataset_name](self.encoder(batch.features))
        if self.training:
            self.forwards += 1
            if self.forwards == self.config.nan_gradient_at:
                logits.register_hook(lambda grad: grad * float("nan"))
        return {"logits": logits}


@LOSSES.register("toy_cross_entropy")
class ToyCrossEntropy(Loss):
    def forward(self, batch, outputs):
        return nn.functional.cross_entropy(outputs["logits"].float(), batch.label)


@METRICS.register("toy_accuracy")
class ToyAccuracy(Metric):
    primary = "accuracy"

    def update(self, batch, outputs):
        predicted = outputs["logits"].argmax(-1)
        for index, p, y in zip(batch.index, predicted.tolist(), batch.label.tolist()):
            self.add(int(index), float(p == y))

    def summarize(self, records):
        return {"accuracy": sum(records) / max(1, len(records)), "count": float(len(records))}


@METRICS.register("toy_scripted")
class ToyScripted(Metric):
    """Returns the next of `values` at each evaluation (drives best-checkpoint tests)."""

    primary = "score"

    def __init__(self, values=(), **params):
        super().__init__(values=values, **params)
        self.values = list(values)
        self.calls = 0

    def update(self, batch, outputs):
        for index in batch.index:
            self.add(int(index), 1.0)

    def summarize(self, records):
        values = self.values
        value = values[min(self.calls, len(values) - 1)]
        self.calls += 1
        return {"score": float(value)}


@CALLBACKS.register("toy_sleep")
class ToySleep(Hook):
    """Slows the loop down so that a test can kill the process between checkpoints."""

    def __init__(self, seconds: float = 0.1):
        super().__init__(seconds=seconds)

    def after_update(self, trainer, result):
        time.sleep(float(self.params.get("seconds", 0.1)))


@CALLBACKS.register("toy_counter")
class ToyCounter(Hook):
    """Counts the updates it saw (stateful: its count is saved in checkpoints) and records it."""

    def __init__(self):
        super().__init__()
        self.count = 0
        self.seen = []

    def after_update(self, trainer, result):
        self.count += 1
        self.seen.append((trainer.update, self.count))

    def state_dict(self):
        return {"count": self.count}

    def load_state_dict(self, state):
        self.count = int(state["count"])


@CALLBACKS.register("toy_terminate")
class ToyTerminate(Hook):
    """Sends SIGTERM to its own process after update `at` on the ranks in `ranks` (as a scheduler
    or torchrun would, but at a known update)."""

    def __init__(self, at: int = 1, ranks=(0,)):
        super().__init__(at=at, ranks=ranks)

    def after_update(self, trainer, result):
        if trainer.update == int(self.params["at"]) and trainer.context.rank in list(self.params["ranks"]):
            os.kill(os.getpid(), signal.SIGTERM)


@CALLBACKS.register("toy_full_disk")
class ToyFullDisk(Hook):
    """From update `at` on, checkpoint writes fail on rank 0 as on a full disk."""

    def __init__(self, at: int = 1):
        super().__init__(at=at)

    def before_update(self, trainer):
        if trainer.update + 1 == int(self.params["at"]) and trainer.context.rank == 0:
            from vlfw.runner import checkpoint

            def full_disk(handle):
                handle.write(b"half a checkpoint")
                raise OSError(errno.ENOSPC, "No space left on device")

            checkpoint.atomic_save = lambda state, path: checkpoint.atomic_write(path, full_disk)


def base_config(save_dir) -> dict:
    return {
        "model": "toy_model", "datasets": ["toy_dataset"], "run_type": "train_val_test", "seed": 3,
        "save_dir": str(save_dir),
        "training": {"max_updates": 12, "batch_size": 8, "eval_every": 4, "checkpoint_every": 3,
                     "log_every": 2, "progress_bar": False, "clip_grad_norm": 1.0},
        "optimizer": {"lr": 1.0e-2},
        "scheduler": {"warmup_updates": 2},
        "logging": {"tensorboard": False},
    }


def make_config(save_dir, **overrides):
    """A full run config for the toy components (via the config loader)."""
    from vlfw.config.loader import load_config

    merged = OmegaConf.merge(OmegaConf.create(base_config(save_dir)),
                             OmegaConf.from_dotlist([f"{k}={v}" for k, v in overrides.items()]))
    return load_config(overrides=merged)


def command_line(save_dir, *overrides: str) -> list[str]:
    """The toy config as `vlfw_run` arguments (for vlfw.cli.run.main in-process), then `overrides`."""
    def flatten(node, prefix=""):
        for key, value in node.items():
            if isinstance(value, dict):
                yield from flatten(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}={json.dumps(value)}"

    return [*flatten(base_config(save_dir)), *overrides]


def main(args: list[str]) -> int:
    save_dir, *dotlist = args
    config = make_config(save_dir, **dict(item.split("=", 1) for item in dotlist))
    metrics = __import__("vlfw.runner", fromlist=["run"]).run(config)
    print(json.dumps(metrics, sort_keys=True))
    return 0


if __name__ == "__main__":  # errors and preemption as the command line reports them
    from vlfw.cli.common import guarded_main, setup_logging

    setup_logging()
    sys.exit(guarded_main("runner_toys", main))
