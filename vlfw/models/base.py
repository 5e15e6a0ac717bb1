"""BaseModel: the class every vlfw model derives from, and the `provides` declaration.

A model says, per task, which method computes its features (a subclass overrides the method to
change them, or sets the name to None to drop those tasks)::

    class MyModel(BaseModel):
        @provides("vqa", "classification", features=("pooled",))
        def fused_features(self, batch): ...

`BaseModel.forward` looks up the batch's task once (from `batch.dataset_name`), calls that
method, and hands the features to the dataset's head (built by `build_heads`). Features whose
name starts with "loss/" (the model's own objectives) are passed through to the outputs. A task
whose `Task.head` is None (pre-training, captioning) returns the method's dict as the outputs.
Generative tasks are evaluated through `generate` (vlfw.generation holds the search).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
from omegaconf import DictConfig
from torch import nn

from vlfw.data.batch import Batch
from vlfw.errors import ConfigError
from vlfw.tasks import TaskInfo

LOSS_PREFIX = "loss/"


def resolve_init_std(config: Any, model: str, by_size: Mapping[str, float], default: float = 0.02) -> float:
    """`model_config.<model>.init_std`, or when null the value of the model's size in `by_size`
    (`default`, BERT's 0.02, for sizes not in it). The paper plugins' 64-wide `tiny` sizes use
    1/sqrt(64): see their READMEs."""
    value = config.get("init_std")
    if value is None:
        return float(by_size.get(str(config.get("size")), default))
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"model_config.{model}.init_std must be a number > 0, got {value!r}")
    return float(value)


def provides(*tasks: str, features: tuple[str, ...] | None = None) -> Callable:
    """Mark a model method as the features of `tasks`: method(batch) -> {name: tensor}.

    `features` (optional) names what the method returns; heads built for those tasks are
    checked against it when the model is built (a head reading a feature the model does not
    give is a one-line error then, not a KeyError mid-training).
    """
    if not tasks or not all(isinstance(t, str) and t for t in tasks):
        raise ValueError("provides() needs one or more task names")

    def mark(method: Callable) -> Callable:
        method._vlfw_provides = (tuple(tasks), None if features is None else tuple(features))
        return method

    return mark


class BaseModel(nn.Module):
    """A model built from its config node and the TaskInfo of every dataset it serves.

    `task_infos` maps dataset name -> TaskInfo; in a multi-task run `batch.dataset_name` picks
    the task and the head. `forward(batch)` returns a dict of tensors.
    """

    DEFAULT_CONFIG: dict | str = {}
    # task -> HEADS name: this model's own default heads, before the task's default (Task.head)
    TASK_HEADS: Mapping[str, str] = {}
    # model cards (vlfw.models.cards, `vlfw_list models --details`): the visual inputs the model
    # reads ("images", "regions"; () = text only; None = not declared) and the config values
    # that build it without reading pretrained weights (its parameters are only counted)
    VISUAL_INPUTS: tuple[str, ...] | None = None
    CARD_CONFIG: Mapping[str, Any] = {}

    # filled per subclass from the @provides methods: task -> (method name, declared features)
    _provided: dict[str, tuple[str, tuple[str, ...] | None]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        table: dict[str, tuple[str, tuple[str, ...] | None]] = {}
        for klass in reversed(cls.__mro__):
            for name, value in vars(klass).items():
                if value is None:  # `name = None` in a subclass withdraws the tasks of that method
                    table = {task: entry for task, entry in table.items() if entry[0] != name}
                    continue
                marked = getattr(value, "_vlfw_provides", None)
                if marked is not None:
                    for task in marked[0]:
                        table[task] = (name, marked[1])
        cls._provided = table

    @classmethod
    def supported_tasks(cls) -> frozenset[str]:
        """The tasks this model gives features for."""
        return frozenset(cls._provided)

    def __init__(self, config: DictConfig | Mapping | None, task_infos: Mapping[str, TaskInfo]) -> None:
        super().__init__()
        from vlfw.config import component_config

        # the one merge of a component's defaults (the loader's too): idempotent on a loaded config
        self.config = component_config(type(self), config, path=f"model_config.{self.model_name()}")
        self.task_infos: dict[str, TaskInfo] = {}
        for dataset, info in task_infos.items():
            if not isinstance(info, TaskInfo):
                raise TypeError(f"task_infos[{dataset!r}] must be a vlfw.tasks.TaskInfo, got {type(info).__name__}")
            self.task_infos[dataset] = info
        supported = self.supported_tasks()
        for dataset, info in self.task_infos.items():
            if info.task not in supported:
                raise ConfigError(
                    f"model {self.model_name()!r} does not support task {info.task!r} (dataset {dataset!r}); "
                    f"it supports: {', '.join(sorted(supported)) or 'none'}")

    @classmethod
    def model_name(cls) -> str:
        """The name the model is registered under (its class name when it is not registered)."""
        from vlfw.registry import MODELS

        return next((entry.name for entry in MODELS.entries() if entry.obj is cls), cls.__name__)

    # -- heads ---------------------------------------------------------------------------------
    def build_heads(self, hidden_size: int, head_configs: Mapping[str, Any] | None = None,
                    head_defaults: Mapping[str, Any] | None = None):
        """One head per dataset (vlfw.modules.heads.TaskHeads): the dataset's `head_configs`
        entry, else this model's TASK_HEADS[task], else the task's default head."""
        from vlfw.modules.heads import TaskHeads

        declared = {task: features for task, (_, features) in self._provided.items()}
        return TaskHeads(hidden_size, self.task_infos, head_configs, model_heads=self.TASK_HEADS,
                         model_name=self.model_name(), head_defaults=head_defaults, declared_features=declared)

    # -- dispatch ------------------------------------------------------------------------------
    def task_of(self, batch: Batch) -> str:
        name = batch.dataset_name
        info = self.task_infos.get(name)
        if info is None:
            raise ConfigError(f"batch from dataset {name!r}, but model {self.model_name()!r} was built for "
                              f"{sorted(self.task_infos)}")
        return info.task

    def features(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The features of the batch's task (the @provides method of that task)."""
        method, _ = self._provided[self.task_of(batch)]
        return getattr(self, method)(batch)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        features = self.features(batch)
        heads = getattr(self, "heads", None)
        if heads is None or not heads.has_head(batch.dataset_name):
            return features
        outputs = heads(features, batch)
        for key, value in features.items():
            if key.startswith(LOSS_PREFIX):
                outputs[key] = value
        return outputs

    def generate(self, batch: Batch, **options: Any) -> torch.Tensor:
        """Token ids (B, T) generated for the batch (captioning): greedy or beam search by the
        core (vlfw.generation.generate) over this model's generation interface."""
        from vlfw.generation import generate

        return generate(self, batch, **options)

    def pretrained_key_map(self) -> dict[str, str]:
        """Prefix renames applied when initialising from another model's checkpoint."""
        return {}
