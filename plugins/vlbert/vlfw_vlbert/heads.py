"""VL-BERT's heads: the pre-training heads (MLM, masked RoI classification, sentence-image
relationship) and the fine-tuning heads registered in vlfw's HEADS (`vlbert_vqa`, `vlbert_region`).

The fine-tuning heads start with the BERT prediction transform (dense, GELU, LayerNorm); the model
initialises it from its MLM transform, also when loading a pre-training checkpoint (see
`VLBert._copy_mlm_transform`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vlfw.modules.heads import Head
from vlfw.registry import HEADS
from vlfw.tasks import TaskInfo
from vlfw_vlbert.encoder import LN_EPS


class Transform(nn.Module):
    """dense -> GELU -> LayerNorm (BERT's prediction-head transform)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=LN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(F.gelu(self.dense(x)))


class MLMHead(nn.Module):
    """transform -> decoder tied to the word embeddings (+ its own bias)."""

    def __init__(self, hidden: int, word_embeddings: nn.Embedding) -> None:
        super().__init__()
        self.transform = Transform(hidden)
        self.bias = nn.Parameter(torch.zeros(word_embeddings.num_embeddings))
        self._words = [word_embeddings]  # a list: not registered twice in the state dict

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return F.linear(self.transform(states), self._words[0].weight, self.bias)


class MRCHead(nn.Module):
    """Masked RoI classification: Linear -> GELU -> Linear to the detector's classes."""

    def __init__(self, hidden: int, num_classes: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, num_classes))

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.net(states)


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy at the masked positions only (labels -100 elsewhere)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over rows of -sum(target * log_softmax(logits)); targets renormalised to sum to 1."""
    targets = targets.float() / targets.float().sum(-1, keepdim=True).clamp(min=1e-6)
    return -(targets * F.log_softmax(logits.float(), dim=-1)).sum(-1).mean()


@HEADS.register("vlbert_vqa")
class VLBertVQAHead(Head):
    """The [MASK] element's output (feature `answer_state`) -> transform -> dropout -> Linear(answers)."""

    init_from_mlm_transform = True
    reads = ("answer_state",)

    def __init__(self, hidden_size: int, task_info: TaskInfo, dropout: float = 0.1) -> None:
        super().__init__(hidden_size, task_info)
        self.transform = Transform(hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, task_info.num_outputs)

    def forward(self, features, batch):
        return {"logits": self.classifier(self.dropout(self.transform(features["answer_state"])))}


@HEADS.register("vlbert_region")
class VLBertRegionHead(Head):
    """Each RoI's output (feature `region_states`) -> transform -> dropout -> Linear(1)."""

    init_from_mlm_transform = True
    reads = ("region_states",)

    def __init__(self, hidden_size: int, task_info: TaskInfo, dropout: float = 0.1) -> None:
        super().__init__(hidden_size, task_info)
        self.transform = Transform(hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.score = nn.Linear(hidden_size, 1)

    def forward(self, features, batch):
        return {"region_logits": self.score(self.dropout(self.transform(features["region_states"]))).squeeze(-1)}
