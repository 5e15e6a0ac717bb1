"""The package's config rules, as data: allowed values, numeric ranges, and where in a run
config the `{type, params}` component nodes live. `vlfw.config.validation` applies them.

Key patterns are dotted paths; `*` stands for any one key (a dataset or model name, a role, a
list index). Components add rules for keys of their own DEFAULT_CONFIG with a class attribute
`CONFIG_CHOICES = {"dotted.key": (allowed, ...)}`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

# -- allowed values ---------------------------------------------------------------------------
CHOICES: dict[str, tuple[Any, ...]] = {
    "training.precision": ("fp32", "bf16", "fp16"),
    "training.nan_policy": ("stop", "skip"),
    "evaluation.mode": ("max", "min"),
    "distributed.strategy": ("ddp", "fsdp"),
    "distributed.backend": ("auto", "nccl", "gloo"),
    "multitask.mode": ("one_per_update", "all_per_update"),
    "checkpoint.resume": (False, True, "auto"),
    "optimizer.implementation": ("auto", "fused", "foreach", "for_loop"),
}

RUN_PARTS = ("train", "val", "test")


def _valid_run_type(value: Any) -> bool:
    parts = str(value).split("_")
    return isinstance(value, str) and all(p in RUN_PARTS for p in parts) and len(set(parts)) == len(parts)


# key -> (test, what the value must be)
FORMATS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "device": (lambda v: isinstance(v, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?", v) is not None,
               "auto, cpu, cuda or cuda:N"),
    "run_type": (_valid_run_type, "train, val and test joined by '_', each at most once (e.g. train_val_test)"),
}

# key -> registry (attribute name in vlfw.registry) whose names the value must be
REGISTRY_NAMES: dict[str, str] = {
    "optimizer.type": "OPTIMIZERS",
    "scheduler.type": "SCHEDULERS",
    "multitask.iteration_strategy": "ITERATION_STRATEGIES",
}


# -- numbers ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Number:
    """A numeric setting: integer or real, with bounds; `nullable` allows null."""

    integer: bool = False
    minimum: float | None = None
    minimum_excluded: bool = False
    maximum: float | None = None
    maximum_excluded: bool = False
    nullable: bool = False

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.integer and not float(value).is_integer():
            return False
        if self.minimum is not None and (value < self.minimum or (self.minimum_excluded and value == self.minimum)):
            return False
        if self.maximum is not None and (value > self.maximum or (self.maximum_excluded and value == self.maximum)):
            return False
        return True

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        bounds = []
        if self.minimum is not None:
            bounds.append(f"{'>' if self.minimum_excluded else '>='} {self.minimum:g}")
        if self.maximum is not None:
            bounds.append(f"{'<' if self.maximum_excluded else '<='} {self.maximum:g}")
        text = f"{kind} {' and '.join(bounds)}" if bounds else kind
        return text + (" or null" if self.nullable else "")


def positive_int(nullable: bool = False) -> Number:
    return Number(integer=True, minimum=0, minimum_excluded=True, nullable=nullable)


def non_negative_int(nullable: bool = False) -> Number:
    return Number(integer=True, minimum=0, nullable=nullable)


def positive(nullable: bool = False) -> Number:
    return Number(minimum=0, minimum_excluded=True, nullable=nullable)


def non_negative(nullable: bool = False) -> Number:
    return Number(minimum=0, nullable=nullable)


def fraction(maximum_excluded: bool = False) -> Number:
    return Number(minimum=0, maximum=1, maximum_excluded=maximum_excluded)


NUMBERS: dict[str, Number] = {
    "seed": non_negative_int(),
    "training.max_updates": positive_int(nullable=True),
    "training.max_epochs": positive_int(nullable=True),
    "training.batch_size": positive_int(),
    "training.gradient_accumulation_steps": positive_int(),
    "training.clip_grad_norm": non_negative(nullable=True),  # null or 0: no clipping
    "training.log_every": positive_int(),
    "training.eval_every": non_negative_int(),  # 0: only at the end of training
    "training.checkpoint_every": non_negative_int(),  # 0: only at the end of training
    "training.num_workers": non_negative_int(),
    "training.early_stopping.patience": positive_int(nullable=True),
    "training.max_consecutive_skips": non_negative_int(),
    "training.max_skipped_fraction": fraction(),
    "training.ema.decay": Number(minimum=0, minimum_excluded=True, maximum=1, maximum_excluded=True, nullable=True),
    "evaluation.batch_size": positive_int(nullable=True),
    "optimizer.lr": positive(),
    "optimizer.weight_decay": non_negative(),
    "optimizer.eps": positive(),
    "optimizer.momentum": fraction(maximum_excluded=True),
    "optimizer.betas.*": fraction(maximum_excluded=True),
    "optimizer.lr_multipliers.*": non_negative(),
    "scheduler.warmup_updates": non_negative_int(),
    "scheduler.warmup_ratio": fraction(),
    "scheduler.min_lr_ratio": fraction(),
    "checkpoint.keep_last": non_negative_int(),  # 0: keep every checkpoint
    "distributed.timeout_minutes": positive(),
    "multitask.temperature": positive(),
    "multitask.ratios.*": positive(),
    "multitask.batch_sizes.*": positive_int(),
    "multitask.loss_weights.*": non_negative(),
    "dataset_config.*.loss_weights.*": non_negative(),
    "dataset_config.*.shapes.seed": non_negative_int(),  # as `vlfw_prepare shapes --seed`
    "dataset_config.*.features.normalize_samples": positive_int(),
    "dataset_config.*.features.max_regions": non_negative_int(),
    "dataset_config.*.features.cache_mb": non_negative(),
}

# list key -> required length
LENGTHS: dict[str, int] = {"optimizer.betas": 2}

# mappings keyed by dataset name: every key must be in `datasets`
DATASET_KEYED: tuple[str, ...] = ("multitask.loss_weights", "multitask.batch_sizes", "multitask.ratios")


# -- {type, params} component nodes -------------------------------------------------------------
@dataclass(frozen=True)
class ComponentNode:
    """Where `{type, params}` nodes naming components of one registry live.

    `many`: the key holds a list of nodes (else the node itself); `names`: a list entry may be
    a bare registry name; `nullable`: a null node or `type: null` turns the component off (the
    builder decides which roles may be off). `injected`: constructor arguments the framework
    passes itself (not user parameters).
    """

    registry: str  # attribute name in vlfw.registry
    kind: str
    many: bool = False
    names: bool = False
    nullable: bool = False
    injected: tuple[str, ...] = ()


NODE_KEYS = ("type", "params")

# relative to a dataset's node (dataset_config.<name>) and a model's node (model_config.<name>)
DATASET_COMPONENTS: dict[str, ComponentNode] = {
    "losses": ComponentNode("LOSSES", "loss", many=True),
    "metrics": ComponentNode("METRICS", "metric", many=True, injected=("task_info",)),
    "processors.*": ComponentNode("PROCESSORS", "processor", nullable=True, injected=("vocabulary", "tokenizer")),
}
MODEL_COMPONENTS: dict[str, ComponentNode] = {
    "heads.*": ComponentNode("HEADS", "head", injected=("hidden_size", "task_info")),
}
RUN_COMPONENTS: dict[str, ComponentNode] = {
    "training.callbacks": ComponentNode("CALLBACKS", "callback", many=True, names=True),
}

# keys the runner reads from every dataset / model node, declared for every component
RUNNER_DATASET_KEYS: dict[str, Any] = {"losses": [], "metrics": [], "loss_weights": {}}
RUNNER_MODEL_KEYS: dict[str, Any] = {"heads": {}}


def component_patterns() -> dict[str, ComponentNode]:
    """Every component node pattern as a full dotted path."""
    patterns = {f"dataset_config.*.{key}": node for key, node in DATASET_COMPONENTS.items()}
    patterns.update({f"model_config.*.{key}": node for key, node in MODEL_COMPONENTS.items()})
    patterns.update(RUN_COMPONENTS)
    return patterns
