"""Task heads and the shared per-dataset head mechanism.

A model computes a dict of *features* with standard names (below); `TaskHeads` holds one head
per dataset, built from the dataset's TaskInfo (and an optional per-dataset config), and picks
the head by `batch.dataset_name`. Which head a dataset gets: its `heads.<dataset>` config entry,
else the model's own default for the task (`BaseModel.TASK_HEADS`), else the task's default
(`Task.head` in vlfw.tasks). A head lists the features it reads in `reads`.

Feature names:
  pooled (B, H)                 one fused vector per sample (vqa, classification)
  pooled_pair (B, 2H)           two fused vectors concatenated (nlvr2)
  region_states (B, N, H)       one fused vector per region (rec, grounding)
  answer_pooled, rationale_pooled (B, 4, H)   one fused vector per choice (vcr)
  image_pooled (B, H), text_pooled (B, H) or (B, K, H)   unimodal vectors (retrieval);
      logit_scale (a scalar, optional): the model's learned contrastive temperature, passed on
"""

from __future__ import annotations

import inspect
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from vlfw.data.batch import Batch
from vlfw.errors import ConfigError, did_you_mean
from vlfw.registry import HEADS, TASKS
from vlfw.tasks import TaskInfo


class Head(nn.Module):
    """Maps a model's features to a task's outputs (see docs/conventions.md).

    `reads`: the features `forward` needs (checked against what the model declares)."""

    reads: tuple[str, ...] = ()

    def __init__(self, hidden_size: int, task_info: TaskInfo, **params: Any) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.task_info = task_info

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


@HEADS.register("classifier")
class ClassifierHead(Head):
    """pooled -> MLP -> logits."""

    feature = "pooled"
    reads = ("pooled",)
    width = 1

    def __init__(self, hidden_size: int, task_info: TaskInfo, dropout: float = 0.1,
                 mlp_ratio: float = 2.0) -> None:
        super().__init__(hidden_size, task_info)
        in_size = hidden_size * self.width
        self.mlp = mlp_classifier(in_size, int(hidden_size * mlp_ratio), task_info.num_outputs, dropout)

    def forward(self, features, batch):
        return {"logits": self.mlp(features[self.feature])}


@HEADS.register("pair_classifier")
class PairClassifierHead(ClassifierHead):
    """pooled_pair (two fused passes concatenated) -> MLP -> logits."""

    feature = "pooled_pair"
    reads = ("pooled_pair",)
    width = 2


@HEADS.register("region_scorer")
class RegionScorerHead(Head):
    """region_states -> one logit per region."""

    reads = ("region_states",)

    def __init__(self, hidden_size: int, task_info: TaskInfo, dropout: float = 0.1) -> None:
        super().__init__(hidden_size, task_info)
        self.score = nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.GELU(), nn.Dropout(dropout),
                                   nn.Linear(hidden_size, 1))

    def forward(self, features, batch):
        return {"region_logits": self.score(features["region_states"]).squeeze(-1)}


@HEADS.register("choice_scorer")
class ChoiceScorerHead(Head):
    """answer_pooled / rationale_pooled (B, 4, H) -> one logit per choice."""

    reads = ("answer_pooled",)

    def __init__(self, hidden_size: int, task_info: TaskInfo, dropout: float = 0.1) -> None:
        super().__init__(hidden_size, task_info)
        self.score = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden_size, 1))

    def forward(self, features, batch):
        outputs = {"answer_logits": self.score(features["answer_pooled"]).squeeze(-1)}
        if "rationale_pooled" in features:
            outputs["rationale_logits"] = self.score(features["rationale_pooled"]).squeeze(-1)
        return outputs


@HEADS.register("embedding")
class EmbeddingHead(Head):
    """image_pooled / text_pooled -> L2-normalised embeddings in a shared space (a learned
    temperature `logit_scale`, when the model gives one, is passed on to the loss)."""

    reads = ("image_pooled", "text_pooled")

    def __init__(self, hidden_size: int, task_info: TaskInfo, embedding_size: int = 256) -> None:
        super().__init__(hidden_size, task_info)
        self.image_projection = nn.Linear(hidden_size, embedding_size)
        self.text_projection = nn.Linear(hidden_size, embedding_size)

    def forward(self, features, batch):
        outputs = {
            "image_embeddings": F.normalize(self.image_projection(features["image_pooled"]), dim=-1),
            "text_embeddings": F.normalize(self.text_projection(features["text_pooled"]), dim=-1),
        }
        if "logit_scale" in features:
            outputs["logit_scale"] = features["logit_scale"]
        return outputs


class TaskHeads(nn.Module):
    """One head per dataset, chosen by `batch.dataset_name`.

    `head_configs` maps dataset name -> {type: <HEADS name>, params: {...}} to override the
    default head. Otherwise a dataset gets `model_heads[task]` (the model's own head for the
    task), else the task's `Task.head`; a task without a head (pre-training, captioning) gets
    none and the model's features are its outputs. `head_defaults` (e.g. the model's dropout)
    are passed to every head whose constructor takes them, unless the head's own params say
    otherwise. `declared_features` (task -> feature names, from the model's @provides) lets a
    head that reads a feature the model does not give fail here, when the model is built.
    """

    def __init__(self, hidden_size: int, task_infos: Mapping[str, TaskInfo],
                 head_configs: Mapping[str, Any] | None = None,
                 model_heads: Mapping[str, str] | None = None, model_name: str = "model",
                 head_defaults: Mapping[str, Any] | None = None,
                 declared_features: Mapping[str, tuple[str, ...] | None] | None = None) -> None:
        super().__init__()
        head_configs = dict(head_configs or {})
        unknown = set(head_configs) - set(task_infos)
        if unknown:
            raise ConfigError(f"{model_name}: heads configured for datasets not in this run: {sorted(unknown)}"
                              f"{did_you_mean(sorted(unknown)[0], task_infos)}")
        self.heads = nn.ModuleDict()
        for dataset, info in task_infos.items():
            spec = head_configs.get(dataset) or {}
            head_type = spec.get("type") or (model_heads or {}).get(info.task) or TASKS.get(info.task).head
            if head_type is None:
                continue  # the model's outputs are final for this task (e.g. pre-training objectives)
            head_class = HEADS.get(str(head_type))
            declared = (declared_features or {}).get(info.task)
            missing = [f for f in head_class.reads if declared is not None and f not in declared]
            if missing:
                raise ConfigError(
                    f"model {model_name!r} gives {', '.join(declared) or 'no features'} for task {info.task!r}, "
                    f"but head {head_type!r} of dataset {dataset!r} reads {', '.join(missing)}; pick another head "
                    f"in model_config.<model>.heads.{dataset}")
            accepted = inspect.signature(head_class.__init__).parameters
            params = {k: v for k, v in (head_defaults or {}).items() if k in accepted}
            params.update(spec.get("params") or {})
            self.heads[dataset] = head_class(hidden_size, info, **params)

    def has_head(self, dataset: str | None) -> bool:
        return dataset in self.heads

    def forward(self, features: Mapping[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        return self.heads[batch.dataset_name](features, batch)
