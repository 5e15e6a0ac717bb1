"""COCO and Flickr30k captions in the Karpathy split: retrieval and captioning builders."""

from __future__ import annotations

import os

import torch

from vlfw.data.batch import Sample, pad_stack
from vlfw.datasets.common import (BadRecordError, NativeBuilder, NativeDataset, dataset_defaults, join,
                                  read_json, require_files)
from vlfw.errors import DataError
from vlfw.registry import DATASETS

KARPATHY_SPLITS = {"train": ["train", "restval"], "val": ["val"], "test": ["test"]}


class KarpathyCaptionsBuilder(NativeBuilder):
    """Shared reading of dataset_coco.json / dataset_flickr30k.json.

    Records are images: {image_id, path, stem, split, captions}. COCO: image_id = cocoid,
    image `<image_dir>/<filepath>/<filename>`. Flickr30k: image_id = the file name's number,
    image `<image_dir>/flickr30k-images/<filename>`.
    """

    KARPATHY_FILE = ""
    FLICKR = False

    def annotation_path(self) -> str:
        return join(self.paths.data_dir, self.KARPATHY_FILE)

    def image_path(self, entry: dict) -> str:
        if self.FLICKR:
            return join(self.paths.image_dir, "flickr30k-images", entry["filename"])
        return join(self.paths.image_dir, entry.get("filepath", ""), entry["filename"])

    def read_images(self, split: str, bad) -> list[dict]:
        path = self.annotation_path()
        require_files(self.name, {"Karpathy split file": path})
        data = read_json(path)
        images = data.get("images") if isinstance(data, dict) else None
        if not isinstance(images, list):
            raise DataError(f"{path}: expected a top-level 'images' list")
        wanted = set(self.native_splits(split))
        records = []
        for position, entry in enumerate(images):
            if not isinstance(entry, dict) or entry.get("split") not in wanted:
                continue
            where = f"images[{position}] (filename {entry.get('filename')})"
            filename = entry.get("filename")
            if not isinstance(filename, str) or not filename:
                bad.handle(BadRecordError(path, where, "missing filename"))
                continue
            stem = os.path.splitext(filename)[0]
            try:
                image_id = int(entry["cocoid"]) if not self.FLICKR and "cocoid" in entry else int(stem.split("_")[-1])
            except (ValueError, KeyError):
                image_id = int(entry.get("imgid", position))
            captions = [s.get("raw", "").strip() for s in entry.get("sentences", []) if isinstance(s, dict)]
            captions = [c for c in captions if c]
            if not captions:
                bad.handle(BadRecordError(path, where, "no non-empty caption"))
                continue
            records.append({"image_id": image_id, "path": self.image_path(entry), "stem": stem,
                            "split": entry["split"], "captions": captions, "where": where})
        return records

    def visual_fields(self, dataset: NativeDataset, index: int, record: dict) -> dict[str, torch.Tensor]:
        where = f"image_id {record['image_id']}"
        if self.visual == "images":
            fields, _ = self.load_image(record["path"], where, dataset.train, dataset.generator(index))
            return fields
        return self.load_regions(str(record["image_id"]), record["stem"], where)

    def encode_all(self, captions: list[str]) -> dict[str, torch.Tensor]:
        """(K, L) input_ids/token_type_ids, padded with 0, and text_mask (K,)."""
        encoded = [self.text_processor(c) for c in captions]
        ids = pad_stack([e["input_ids"] for e in encoded])
        types = pad_stack([e["token_type_ids"] for e in encoded])
        return {"input_ids": ids, "token_type_ids": types, "text_mask": torch.ones(len(encoded), dtype=torch.bool)}

    def build(self, split: str) -> NativeDataset:
        """Train: one record per (image, caption); val/test: `eval_records` of the images."""
        bad = self.new_bad_counter(split)
        images = self.read_images(split, bad)
        records = per_caption(images) if self.is_train(split) else self.eval_records(images)
        return self.make_dataset(split, records, self._load_sample, bad)

    def eval_records(self, images: list[dict]) -> list[dict]:
        raise NotImplementedError


def per_caption(images: list[dict]) -> list[dict]:
    """One training record per (image, caption) pair."""
    return [dict(image, caption=c, caption_index=k) for image in images for k, c in enumerate(image["captions"])]


class RetrievalBuilder(KarpathyCaptionsBuilder):
    """Train: one sample per (image, caption). Val/test: one per image with ALL its captions
    as (K, L) `input_ids` and `text_mask` (K,)."""

    TASK = "retrieval"
    DEFAULT_CONFIG = dataset_defaults(
        splits=KARPATHY_SPLITS,
        losses=[{"type": "contrastive", "weight": 1.0, "params": {}}],
        metrics=[{"type": "retrieval_recall", "params": {}}],
    )

    def eval_records(self, images: list[dict]) -> list[dict]:
        return images

    def _load_sample(self, dataset: NativeDataset, index: int, record: dict) -> Sample:
        sample = Sample(index=index, split=record["split"], image_id=record["image_id"])
        if "caption" in record:
            sample.id = f"{record['image_id']}_{record['caption_index']}"
            encoded = self.text_processor(record["caption"])
            sample.input_ids, sample.token_type_ids = encoded["input_ids"], encoded["token_type_ids"]
        else:
            sample.id = record["image_id"]
            sample.update(self.encode_all(record["captions"]))
        sample.update(self.visual_fields(dataset, index, record))
        return sample


class CaptioningBuilder(KarpathyCaptionsBuilder):
    """Train: one sample per (image, caption) for teacher forcing. Val/test: one per image,
    `references` = all its captions, `input_ids` = its first caption."""

    TASK = "captioning"
    DEFAULT_CONFIG = dataset_defaults(
        splits=KARPATHY_SPLITS,
        losses=[{"type": "caption_cross_entropy", "weight": 1.0, "params": {}}],
        metrics=[{"type": "caption_metrics", "params": {}}],
    )

    def eval_records(self, images: list[dict]) -> list[dict]:
        return [dict(image, caption=image["captions"][0], caption_index=None) for image in images]

    def _load_sample(self, dataset: NativeDataset, index: int, record: dict) -> Sample:
        sample = Sample(index=index, split=record["split"], image_id=record["image_id"])
        sample.id = record["image_id"] if record["caption_index"] is None else f"{record['image_id']}_{record['caption_index']}"
        encoded = self.text_processor(record["caption"])
        sample.input_ids, sample.token_type_ids = encoded["input_ids"], encoded["token_type_ids"]
        sample.references = list(record["captions"])
        sample.update(self.visual_fields(dataset, index, record))
        return sample


@DATASETS.register("coco_retrieval")
class CocoRetrievalBuilder(RetrievalBuilder):
    KARPATHY_FILE = "dataset_coco.json"


@DATASETS.register("coco_captioning")
class CocoCaptioningBuilder(CaptioningBuilder):
    KARPATHY_FILE = "dataset_coco.json"


@DATASETS.register("flickr30k_retrieval")
class Flickr30kRetrievalBuilder(RetrievalBuilder):
    KARPATHY_FILE = "dataset_flickr30k.json"
    FLICKR = True


@DATASETS.register("flickr30k_captioning")
class Flickr30kCaptioningBuilder(CaptioningBuilder):
    KARPATHY_FILE = "dataset_flickr30k.json"
    FLICKR = True
