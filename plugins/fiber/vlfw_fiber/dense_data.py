"""Datasets of the fine-grained tasks: the core's RefCOCO / RefCOCO+ / RefCOCOg and Flickr30k Entities
builders (same files, same records, `source: shapes` reads the Shapes world's renditions) with the
task `dense_rec` / `dense_grounding` and the fine-grained stage's loss and metric as defaults.

What the head needs and the core's builders already give with `visual: images`: `gt_box` /
`gt_boxes` moved with the image transform (pixels of the transformed tensor) and no horizontal
flips (vlfw's `image_transform` has none; its optional RandAugment rotates / shears / translates
boxes with the pixels, never mirrors, so "left" / "right" stay true). Added here: `input_size`
[2] = (width, height) of the transformed tensor (the batch's `image_size` is the ORIGINAL size),
which is where the predicted boxes live.
"""

from __future__ import annotations

import json

import torch

from vlfw.data.batch import Batch, Sample
from vlfw.datasets.common import dataset_defaults, path_manager
from vlfw.datasets.flickr30k_entities import Flickr30kEntitiesBuilder, Flickr30kEntitiesMapper
from vlfw.datasets.refcoco import RefCocoMapper, RefCocoUncBuilder
from vlfw.errors import ConfigError
from vlfw.registry import DATASETS

DENSE_LOSSES = [{"type": "fiber_grounding", "params": {}}]


def _with_input_size(sample: Sample) -> Sample:
    image = sample.image
    sample.input_size = torch.tensor([float(image.shape[-1]), float(image.shape[-2])])
    return sample


class DenseRefCocoMapper(RefCocoMapper):
    NEEDS_CANDIDATES = False  # the dense head predicts the box

    def __call__(self, record: dict, index: int, generator: torch.Generator) -> Sample:
        return _with_input_size(super().__call__(record, index, generator))


class DenseFlickr30kEntitiesMapper(Flickr30kEntitiesMapper):
    def __call__(self, record: dict, index: int, generator: torch.Generator) -> Sample:
        return _with_input_size(super().__call__(record, index, generator))


def original_pixels(boxes: torch.Tensor, batch: Batch) -> torch.Tensor:
    """xyxy boxes [B, ..., 4] in transformed-tensor pixels -> pixels of the original image (the
    evaluation transform is a plain resize: x scaled by W_orig / W_in, y by H_orig / H_in)."""
    original = torch.as_tensor(batch["image_size"]).float().reshape(-1, 2).to(boxes.device)
    current = torch.as_tensor(batch["input_size"]).float().reshape(-1, 2).to(boxes.device)
    scale = (original / current).repeat(1, 2)  # (sx, sy, sx, sy)
    return boxes * scale.reshape(scale.shape[0], *([1] * (boxes.dim() - 2)), 4)


class _ImagesOnly:
    def task_info(self):
        if self.visual != "images":
            raise ConfigError(f"dataset {self.name!r} ({self.TASK}): the dense head predicts boxes on the image; "
                              f"set dataset_config.{self.name}.visual=images")
        return super().task_info()


REC_SPLITS = {"train": ["train"], "val": ["val"], "test": ["testA", "testB"], "testA": ["testA"], "testB": ["testB"]}


@DATASETS.register("fiber_refcoco")
class DenseRefCocoBuilder(_ImagesOnly, RefCocoUncBuilder):
    """RefCOCO (UNC splits) for the dense head: task dense_rec, loss fiber_grounding, Acc@0.5 of the
    predicted box (per split too). The candidate `region_boxes` of the core builder stay in the
    samples (unused)."""

    TASK = "dense_rec"
    FOLDER = "refcoco"
    BENCHMARK = "refcoco"
    MAPPER = DenseRefCocoMapper
    DEFAULT_CONFIG = dataset_defaults(
        split_by="unc", splits=REC_SPLITS, losses=DENSE_LOSSES,
        metrics=[{"type": "predicted_box_rec_accuracy", "params": {}}],
    )

    def format_predictions(self, batch: Batch, outputs: dict[str, torch.Tensor]) -> list[dict]:
        """[{"sent_id", "ref_id", "image_id", "box" [x1, y1, x2, y2] in ORIGINAL image pixels, "score"}]:
        the top-1 predicted box of each expression."""
        boxes = original_pixels(outputs["pred_boxes"][:, 0].float(), batch).cpu().tolist()
        scores = outputs["pred_scores"][:, 0].float().cpu().tolist() if "pred_scores" in outputs else [None] * len(boxes)
        return [{"sent_id": int(sent), "ref_id": int(ref), "image_id": int(image), "box": [round(v, 2) for v in box],
                 "score": score}
                for sent, ref, image, box, score in zip(batch["id"], batch["ref_id"], batch["image_id"], boxes, scores)]

    def write_predictions(self, predictions: list[dict], path: str) -> None:
        with path_manager.open(path, "w") as handle:
            json.dump(predictions, handle)


@DATASETS.register("fiber_refcoco_plus")
class DenseRefCocoPlusBuilder(DenseRefCocoBuilder):
    FOLDER = "refcoco+"
    BENCHMARK = "refcoco_plus"


@DATASETS.register("fiber_refcocog")
class DenseRefCocogBuilder(DenseRefCocoBuilder):
    FOLDER = "refcocog"
    BENCHMARK = "refcocog"
    DEFAULT_CONFIG = dataset_defaults(
        split_by="umd", splits={"train": ["train"], "val": ["val"], "test": ["test"]}, losses=DENSE_LOSSES,
        metrics=[{"type": "predicted_box_rec_accuracy", "params": {}}],
    )


@DATASETS.register("fiber_flickr30k_entities")
class DenseFlickr30kEntitiesBuilder(_ImagesOnly, Flickr30kEntitiesBuilder):
    """Flickr30k Entities for the dense head (one phrase per sample, `[CLS] phrase [SEP] sentence [SEP]`):
    task dense_grounding, loss fiber_grounding, Recall@1/5/10 (ANY-box) of the predicted boxes."""

    TASK = "dense_grounding"
    BENCHMARK = "flickr30k_entities"
    MAPPER = DenseFlickr30kEntitiesMapper
    DEFAULT_CONFIG = dataset_defaults(
        splits={"train": ["train"], "val": ["val"], "test": ["test"]}, losses=DENSE_LOSSES,
        metrics=[{"type": "predicted_box_grounding_recall", "params": {}}],
    )

    def format_predictions(self, batch: Batch, outputs: dict[str, torch.Tensor]) -> list[dict]:
        """[{"id", "image_id", "phrase", "boxes" [k, 4] in ORIGINAL image pixels (best first), "scores"}]."""
        boxes = original_pixels(outputs["pred_boxes"].float(), batch).cpu()
        valid = outputs["pred_valid"].bool().cpu()
        scores = outputs["pred_scores"].float().cpu()
        return [{"id": str(i), "image_id": str(image), "phrase": phrase,
                 "boxes": [[round(v, 2) for v in b] for b in boxes[n][valid[n]].tolist()],
                 "scores": scores[n][valid[n]].tolist()}
                for n, (i, image, phrase) in enumerate(zip(batch["id"], batch["image_id"], batch["phrase"]))]

    def write_predictions(self, predictions: list[dict], path: str) -> None:
        with path_manager.open(path, "w") as handle:
            json.dump(predictions, handle)
