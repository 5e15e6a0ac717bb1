"""FIBER's fine-grained stage as vlfw tasks: REC and phrase grounding with boxes the model PREDICTS.

- tasks `dense_rec` (one expression -> one box) and `dense_grounding` (Flickr30k Entities, one phrase
  per sample -> ranked boxes), both served by FIBER's `fused_features` (`image_maps`, `text_states`,
  `text_mask`) and the head `fiber_grounding` (vlfw_fiber.grounding.GroundingHead behind vlfw's Head);
- the loss `fiber_grounding`: the head's own loss terms (token focal, GIoU, centerness; the head owns
  the assignment, so it computes `GroundingHead.loss` in its training forward and returns the terms as
  `grounding/<term>` outputs; this loss is their weighted sum);
- the metrics `predicted_box_rec_accuracy` (Acc@0.5) and `predicted_box_grounding_recall` (Recall@k,
  ANY-box) on the head's `pred_boxes` (vlfw_fiber.grounding.evaluation; record-based, exact across ranks).

The datasets of these tasks are in vlfw_fiber.dense_data.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from vlfw.errors import ConfigError
from vlfw.losses.base import Loss
from vlfw.modules.heads import Head
from vlfw.registry import HEADS, LOSSES, METRICS, TASKS
from vlfw.tasks import Task, TaskInfo
from vlfw_fiber.config import GROUNDING_DEFAULTS
from vlfw_fiber.grounding import GroundingHead, PredictedBoxGroundingRecall, PredictedBoxRECAccuracy
from vlfw_fiber.grounding.postprocess import single_phrase_outputs
from vlfw_fiber.grounding.targets import boxes_per_sample, expression_token_mask

TERM_PREFIX = "grounding/"
TERMS = ("token_focal", "box_giou", "centerness")
DENSE_FEATURES = ("image_maps", "text_states", "text_mask")
DENSE_OUTPUTS = ("token_logits", "box_distances", "centerness_logits", "pred_boxes", "pred_scores", "pred_valid")


@TASKS.register("dense_rec")
class DenseReferringExpressions(Task):
    head = "fiber_grounding"
    features = DENSE_FEATURES
    outputs = DENSE_OUTPUTS
    description = "referring expressions: the box is PREDICTED by a dense language-aware head (Acc@0.5 on it)"


@TASKS.register("dense_grounding")
class DensePhraseGrounding(Task):
    head = "fiber_grounding"
    features = DENSE_FEATURES
    outputs = DENSE_OUTPUTS
    description = "phrase grounding (one phrase per sample): ranked PREDICTED boxes (Recall@k, ANY-box)"


DENSE_TASKS = ("dense_rec", "dense_grounding")


def input_sizes(batch: Any) -> torch.Tensor:
    """[B, 2] (width, height) of the image tensor the boxes live in: the batch's `input_size` when the
    dataset gives it (the unpadded transformed size), else the tensor's own size."""
    if "input_size" in batch:
        return torch.as_tensor(batch["input_size"]).float().reshape(-1, 2)
    image = batch["image"]
    return torch.tensor([[float(image.shape[-1]), float(image.shape[-2])]]).expand(image.shape[0], 2)


@HEADS.register("fiber_grounding")
class FIBERGroundingHead(Head):
    """FIBER's fused stage maps + text states -> GroundingHead (FPN, language-aware FCOS head).

    Training: the targets from the batch (`dense_rec`: `gt_box`, positive on every non-special
    expression token; `dense_grounding`: the chain's `gt_boxes`, positive on the phrase's tokens,
    segment A), the head's loss terms as `grounding/token_focal|box_giou|centerness`. Evaluation:
    `pred_boxes` [B, k, 4] (input-tensor pixels, best first), `pred_scores`, `pred_valid` for the
    phrase (REC: the whole expression). The dense outputs are returned in both modes.

    Settings: `grounding` (GROUNDING_DEFAULTS' keys), the model's `model_config.fiber.grounding`; a
    dataset's `model_config.fiber.heads.<dataset>: {type: fiber_grounding, params: {grounding: {...}}}`
    replaces it for that dataset (merged onto the defaults, not onto the model's node)."""

    reads = DENSE_FEATURES

    def __init__(self, hidden_size: int, task_info: TaskInfo, image_channels: Sequence[int] | None = None,
                 image_strides: Sequence[int] | None = None, text_dim: int | None = None,
                 grounding: Mapping[str, Any] | None = None) -> None:
        super().__init__(hidden_size, task_info)
        if image_channels is None or image_strides is None or text_dim is None:
            raise ConfigError("head fiber_grounding is built by a model that gives image_channels, image_strides "
                              "and text_dim (model fiber)")
        settings = {**GROUNDING_DEFAULTS, **dict(grounding or {})}
        unknown = sorted(set(settings) - set(GROUNDING_DEFAULTS))
        if unknown:
            raise ConfigError(f"head fiber_grounding: unknown setting(s) {unknown}; known: {sorted(GROUNDING_DEFAULTS)}")
        stages = [int(s) for s in settings.pop("stages")]
        if not stages or any(not 0 <= s < len(image_channels) for s in stages) or stages != sorted(set(stages)):
            raise ConfigError(f"model_config.fiber.grounding.stages={stages}: increasing stage indices in "
                              f"[0, {len(image_channels) - 1}]")
        self.stages = stages
        self.predict_k = int(settings.pop("predict_k"))
        if self.predict_k < 1:
            raise ConfigError(f"model_config.fiber.grounding.predict_k must be >= 1, got {self.predict_k}")
        weights = dict(settings.pop("loss_weights") or {})
        try:
            self.grounding = GroundingHead([int(image_channels[s]) for s in stages], int(text_dim),
                                           strides=[int(image_strides[s]) for s in stages], loss_weights=weights,
                                           **settings)
        except ValueError as error:
            raise ConfigError(f"head fiber_grounding: {error}") from None
        if task_info.task not in DENSE_TASKS:
            raise ConfigError(f"head fiber_grounding serves tasks {DENSE_TASKS}, not {task_info.task!r} "
                              f"(dataset {task_info.dataset!r})")
        self.phrase_segment = task_info.task == "dense_grounding"  # the phrase is segment A of [CLS] A [SEP] B
        self.special_ids = sorted(task_info.text.special_ids) if task_info.text is not None else []

    def phrase_masks(self, batch: Any, text_mask: torch.Tensor) -> torch.Tensor:
        """[B, T] bool: the tokens of each sample's phrase (REC: the expression's non-special tokens;
        grounding: those of segment A); a sample without any (a fully truncated text) falls back to its
        real tokens."""
        attention = batch.get("attention_mask")
        if attention is None:
            attention = text_mask
        tokens = expression_token_mask(batch["input_ids"], attention, self.special_ids)
        if self.phrase_segment:
            tokens &= torch.as_tensor(batch["token_type_ids"], device=tokens.device) == 0
        empty = ~tokens.any(dim=1)
        return torch.where(empty[:, None], text_mask.bool(), tokens)

    def targets(self, batch: Any, phrases: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """One {"boxes", "positive_map"} per sample; degenerate boxes (cut to nothing by the image
        transform) are dropped."""
        if self.phrase_segment:
            if "gt_boxes" not in batch:
                raise ConfigError(f"fiber_grounding (dense_grounding) trains on `gt_boxes`; the batch of "
                                  f"{batch.dataset_name!r} has none")
            per_sample = boxes_per_sample(batch["gt_boxes"])
        else:
            if "gt_box" not in batch:
                raise ConfigError(f"fiber_grounding (dense_rec) trains on `gt_box`; the batch of "
                                  f"{batch.dataset_name!r} has none")
            per_sample = list(torch.as_tensor(batch["gt_box"]).float().reshape(-1, 1, 4))
        out = []
        for i, boxes in enumerate(per_sample):
            boxes = boxes.to(phrases.device).float()
            boxes = boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]
            out.append({"boxes": boxes, "positive_map": phrases[i:i + 1].expand(boxes.shape[0], -1)})
        return out

    def forward(self, features, batch):
        maps = features["image_maps"]
        text_mask = features["text_mask"].bool()
        outputs = self.grounding([maps[s] for s in self.stages], features["text_states"], text_mask)
        phrases = self.phrase_masks(batch, text_mask)
        if self.training:
            for name, value in self.grounding.loss(outputs, self.targets(batch, phrases)).items():
                outputs[TERM_PREFIX + name] = value
        else:
            results = self.grounding.predict(outputs, [p[None] for p in phrases], input_sizes(batch), self.predict_k)
            outputs.update(single_phrase_outputs(results))
        return outputs


@LOSSES.register("fiber_grounding")
class FIBERGroundingLoss(Loss):
    """The fine-grained stage's loss: sum of the `grounding/<term>` outputs of head `fiber_grounding`
    (GroundingHead.loss: token focal + centerness-weighted GIoU + centerness BCE, already weighted by
    model_config.fiber.grounding.loss_weights), each times `weights[term]` (default 1)."""

    def __init__(self, weights: Mapping[str, float] | None = None) -> None:
        super().__init__()
        self.weights = {str(k): float(v) for k, v in dict(weights or {}).items()}
        unknown = sorted(set(self.weights) - set(TERMS))
        if unknown:
            raise ConfigError(f"loss fiber_grounding: unknown weights {unknown}; terms: {', '.join(TERMS)}")

    def forward(self, batch, outputs):
        terms = {key[len(TERM_PREFIX):]: value for key, value in outputs.items() if key.startswith(TERM_PREFIX)}
        if not terms:
            raise ConfigError("loss fiber_grounding reads the grounding/<term> outputs of head fiber_grounding in "
                              "training mode; this dataset's head gave none (is its task dense_rec / dense_grounding?)")
        total = None
        for name, value in terms.items():
            value = value * self.weights.get(name, 1.0)
            total = value if total is None else total + value
        return total


METRICS.add("predicted_box_rec_accuracy", PredictedBoxRECAccuracy)
METRICS.add("predicted_box_grounding_recall", PredictedBoxGroundingRecall)
