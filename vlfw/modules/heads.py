"""Task heads and the shared per-dataset head mechanism.

A model computes a dict of *features* with standard names (below); `TaskHeads` holds one head
per dataset, built from the dataset's task_info (and an optional per-dataset config), and picks
the head by `batch.dataset_name`. A plugin model gets multi-task support by producing the
features its tasks need and calling its TaskHeads; it never writes a dispatch of its own.

Feature names:
  pooled (B, H)                 one fused vector per sample (vqa, classification)
  pooled_pair (B, 2H)           two fused vectors concatenated (nlvr2)
  region_states (B, N, H)       one fused vector per region (rec, grounding)
  answer_pooled, rationale_pooled (B, 4, H)   one fused vector per choice (vcr)
  image_pooled (B, H), text_pooled (B, H) or (B, K, H)   unimodal vectors (retrieval)
"""

from __future__ import annotations

import inspect
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from vlfw.data.batch import Batch
from vlfw.errors import ConfigError
from vlfw.registry import HEADS

# which head a task gets when the config does not name one
DEFAULT_HEADS = {
    "vqa": "classifier",
    "classification": "classifier",
    "nlvr2": "pair_classifier",
    "rec": "region_scorer",
    "grounding": "region_scorer",
    "vcr": "choice_scorer",
    "retrieval": "embedding",
}


class Head(nn.Module):
    """Maps a model's features to a task's outputs (see docs/conventions.md)."""

    def __init__(self, hidden_size: int, task_info: Mapping[str, Any], **params: Any) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.task_info = dict(task_info)

    def forward(self, features: Mapping[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError


def mlp_classifier(in_size: int, hidden_size: int, num_outputs: int, dropout: float = 0.1) -> nn.Sequential:
    """Linear -> LayerNorm -> GELU -> dropout -> Linear, as the fusion models' answer heads."""
    return nn.Sequential(
        nn.Linear(in_size, hidden_size),
        nn.LayerNorm(hidden_size),
        nn.GELU(),
        nn.Dropout(dropout),
        nn.Linear(hidden_size, num_outputs),
    )


def _num_outputs(task_info: Mapping[str, Any]) -> int:
    for key in ("num_answers", "num_labels"):
        if key in task_info:
            return int(task_info[key])
    raise ConfigError(f"task {task_info.get('task')!r} gives neither num_answers nor num_labels for its head")


@HEADS.register("classifier")
class ClassifierHead(Head):
    """pooled -> MLP -> logits."""

    feature = "pooled"
    width = 1

    def __init__(self, hidden_size: int, task_info: Mapping[str, Any], dropout: float = 0.1,
                 mlp_ratio: float = 2.0) -> None:
        super().__init__(hidden_size, task_info)
        in_size = hidden_size * self.width
        self.mlp = mlp_classifier(in_size, int(hidden_size * mlp_ratio), _num_outputs(task_info), dropout)

    def forward(self, features, batch):
        return {"logits": self.mlp(features[self.feature])}


@HEADS.register("pair_classifier")
class PairClassifierHead(ClassifierHead):
    """pooled_pair (two fused passes concatenated) -> MLP -> logits."""

    feature = "pooled_pair"
    width = 2


@HEADS.register("region_scorer")
class RegionScorerHead(Head):
    """region_states -> one logit per region."""

    def __init__(self, hidden_size: int, task_info: Mapping[str, Any], dropout: float = 0.1) -> None:
        super().__init__(hidden_size, task_info)
        self.score = nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.GELU(), nn.Dropout(dropout),
                                   nn.Linear(hidden_size, 1))

    def forward(self, features, batch):
        return {"region_logits": self.score(features["region_states"]).squeeze(-1)}


@HEADS.register("choice_scorer")
class ChoiceScorerHead(Head):
    """answer_pooled / rationale_pooled (B, 4, H) -> one logit per choice."""

    def __init__(self, hidden_size: int, task_info: Mapping[str, Any], dropout: float = 0.1) -> None:
        super().__init__(hidden_size, task_info)
        self.score = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden_size, 1))

    def forward(self, features, batch):
        outputs = {"answer_logits": self.score(features["answer_pooled"]).squeeze(-1)}
        if "rationale_pooled" in features:
            outputs["rationale_logits"] = self.score(features["rationale_pooled"]).squeeze(-1)
        return outputs


@HEADS.register("embedding")
class EmbeddingHead(Head):
    """image_pooled / text_pooled -> L2-normalised embeddings in a shared space."""

    def __init__(self, hidden_size: int, task_info: Mapping[str, Any], embedding_size: int = 256) -> None:
        super().__init__(hidden_size, task_info)
        self.image_projection = nn.Linear(hidden_size, embedding_size)
        self.text_projection = nn.Linear(hidden_size, embedding_size)

    def forward(self, features, batch):
        return {
            "image_embeddings": F.normalize(self.image_projection(features["image_pooled"]), dim=-1),
            "text_embeddings": F.normalize(self.text_projection(features["text_pooled"]), dim=-1),
        }


class TaskHeads(nn.Module):
    """One head per dataset, chosen by `batch.dataset_name`.

    `head_configs` maps dataset name -> {type: <HEADS name>, params: {...}} to override the
    default head of the dataset's task. `head_defaults` (e.g. the model's dropout) are passed
    to every head whose constructor takes them, unless the head's own params say otherwise.
    """

    def __init__(self, hidden_size: int, task_infos: Mapping[str, Mapping[str, Any]],
                 head_configs: Mapping[str, Any] | None = None,
                 supported_tasks: set[str] | None = None, model_name: str = "model",
                 head_defaults: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        head_configs = dict(head_configs or {})
        unknown = set(head_configs) - set(task_infos)
        if unknown:
            raise ConfigError(f"{model_name}: heads configured for datasets not in this run: {sorted(unknown)}")
        self.heads = nn.ModuleDict()
        self.tasks: dict[str, str] = {}
        for dataset, info in task_infos.items():
            task = info.get("task")
            self.tasks[dataset] = task
            if supported_tasks is not None and task not in supported_tasks:
                raise ConfigError(
                    f"model {model_name!r} does not support task {task!r} (dataset {dataset!r}); "
                    f"it supports: {', '.join(sorted(supported_tasks))}"
                )
            spec = head_configs.get(dataset) or {}
            head_type = spec.get("type") or DEFAULT_HEADS.get(task)
            if head_type is None:
                continue  # the model handles this task itself (e.g. pre-training objectives)
            head_class = HEADS.get(head_type)
            accepted = inspect.signature(head_class.__init__).parameters
            params = {k: v for k, v in (head_defaults or {}).items() if k in accepted}
            params.update(spec.get("params") or {})
            self.heads[dataset] = head_class(hidden_size, info, **params)

    def task(self, batch: Batch) -> str:
        name = batch.dataset_name
        if name not in self.tasks:
            raise ConfigError(f"batch from dataset {name!r}, but the model was built for {sorted(self.tasks)}")
        return self.tasks[name]

    def forward(self, features: Mapping[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        return self.heads[batch.dataset_name](features, batch)
