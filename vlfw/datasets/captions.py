"""COCO and Flickr30k captions in the Karpathy split: retrieval and captioning builders."""

from __future__ import annotations

import logging
import os
from typing import Any, Sequence

import torch

from vlfw.data.batch import Batch, Sample, pad_stack
from vlfw.datasets.common import NativeBuilder, NativeMapper, dataset_defaults
from vlfw.datasets.predictions import write_json
from vlfw.datasets.records import BadRecordCounter, BadRecordError, join, json_kind, read_json_list, require_files
from vlfw.registry import DATASETS

log = logging.getLogger(__name__)

KARPATHY_SPLITS = {"train": ["train", "restval"], "val": ["val"], "test": ["test"]}
# decoding settings the evaluator passes to model.generate for the captioning builders
GENERATION_DEFAULTS = {"max_length": 30, "num_beams": 5, "length_penalty": 1.0, "min_length": 1}


def sentence_id(sentence: dict, image_id: int, position: int) -> int | str:
    """A caption's id in prediction files: its Karpathy `sentid`, else "<image_id>_<position>"."""
    value = sentence.get("sentid")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return f"{image_id}_{position}"


class CaptionsMapper(NativeMapper):
    """Shared by retrieval and captioning: the image (or regions) of a Karpathy record."""

    def visual_fields(self, record: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        where = f"image_id {record['image_id']}"
        if self.visual == "images":
            fields, _ = self.load_image(record["path"], where, generator)
            return fields
        return self.load_regions(str(record["image_id"]), record["stem"], where)

    def encode_all(self, captions: list[str]) -> dict[str, torch.Tensor]:
        """(K, L) input_ids (padded with the tokenizer's pad id), token_type_ids and attention_mask
        (True = a real token of that caption), and text_mask (K,)."""
        encoded = [self.text(c) for c in captions]
        ids = pad_stack([e["input_ids"] for e in encoded], self.text.pad_id)
        types = pad_stack([e["token_type_ids"] for e in encoded])
        # the mask is the sample's own: collate would take every position of the (K, L) stack as real
        mask = pad_stack([torch.ones(len(e["input_ids"]), dtype=torch.bool) for e in encoded], False)
        return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask,
                "text_mask": torch.ones(len(encoded), dtype=torch.bool)}


class RetrievalMapper(CaptionsMapper):
    """Train: (image, one caption). Val/test: the image and all its captions (K, L)."""

    def __call__(self, record: dict, index: int, generator: torch.Generator) -> Sample:
        sample = Sample(index=index, split=record["split"], image_id=record["image_id"])
        if "caption" in record:
            sample.id = f"{record['image_id']}_{record['caption_index']}"
            self.encode(sample, record["caption"])
        else:
            sample.id = record["image_id"]
            sample.update(self.encode_all(record["captions"]))
        sample.update(self.visual_fields(record, generator))
        return sample


class CaptioningMapper(CaptionsMapper):
    """(image, caption) for teacher forcing, with all the image's captions as `references`."""

    def __call__(self, record: dict, index: int, generator: torch.Generator) -> Sample:
        sample = Sample(index=index, split=record["split"], image_id=record["image_id"])
        sample.id = record["image_id"] if record["caption_index"] is None else f"{record['image_id']}_{record['caption_index']}"
        self.encode(sample, record["caption"])
        sample.references = list(record["captions"])
        sample.update(self.visual_fields(record, generator))
        return sample


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

    def read_images(self, split: str, bad: BadRecordCounter) -> list[dict]:
        path = self.annotation_path()
        require_files(self.name, {"Karpathy split file": path})
        images = read_json_list(path, "images")
        wanted = set(self.native_splits(split))
        records = []
        for position, entry in enumerate(images):
            if not isinstance(entry, dict):
                bad.handle(BadRecordError(path, f"images[{position}]", f"an image entry must be a JSON object, "
                                          f"got {json_kind(entry)}"))
                continue
            if entry.get("split") not in wanted:
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
            sentences = [(s.get("raw", "").strip(), sentence_id(s, image_id, k))
                         for k, s in enumerate(entry.get("sentences", [])) if isinstance(s, dict)]
            sentences = [(c, i) for c, i in sentences if c]
            if not sentences:
                bad.handle(BadRecordError(path, where, "no non-empty caption"))
                continue
            records.append({"image_id": image_id, "path": self.image_path(entry), "stem": stem,
                            "split": entry["split"], "captions": [c for c, _ in sentences],
                            "sentids": [i for _, i in sentences], "where": where})
        return records

    def read_records(self, split: str, bad: BadRecordCounter) -> list[dict]:
        """Train: one record per (image, caption); val/test: `eval_records` of the images."""
        images = self.read_images(split, bad)
        return per_caption(images) if self.is_train(split) else self.eval_records(images)

    def eval_records(self, images: list[dict]) -> list[dict]:
        raise NotImplementedError

    def predict_record(self, inputs: dict[str, Any]) -> tuple[dict, list[str] | None]:
        """Retrieval: the texts to embed (`texts`); captioning: none (the first caption is a
        placeholder the mapper encodes; generation starts from the bos token)."""
        texts = [str(t) for t in (inputs.get("texts") or [""])]
        image = {"image_id": 0, "path": "predict.jpg", "stem": "predict", "split": self.native_splits("val")[0],
                 "captions": texts, "where": "prediction input"}
        return self.eval_records([image])[0], None


def per_caption(images: list[dict]) -> list[dict]:
    """One training record per (image, caption) pair."""
    return [dict(image, caption=c, caption_index=k) for image in images for k, c in enumerate(image["captions"])]


class RetrievalBuilder(KarpathyCaptionsBuilder):
    """Train: one sample per (image, caption). Val/test: one per image with ALL its captions
    as (K, L) `input_ids` and `text_mask` (K,)."""

    TASK = "retrieval"
    MAPPER = RetrievalMapper
    DEFAULT_CONFIG = dataset_defaults(
        splits=KARPATHY_SPLITS,
        losses=[{"type": "contrastive", "params": {}}],
        metrics=[{"type": "retrieval_recall", "params": {}}],
    )

    def eval_records(self, images: list[dict]) -> list[dict]:
        return images

    RANKING_LENGTH = 10  # candidates per query in the ranking file (R@1/5/10)

    def split_predictions(self, dataset: Any, metrics: Sequence[Any]) -> dict | None:
        """The ranking file, from the `retrieval_recall` metric's embeddings of the whole split:
        {"top_k", "text_to_image": [{"sentid", "image_ids"}], "image_to_text": [{"image_id", "sentids"}]},
        each list best first, ordered so that the in-run recalls follow from it exactly."""
        from vlfw.metrics.retrieval import RetrievalRecall, top_candidates

        metric = next((m for m in metrics if isinstance(m, RetrievalRecall)), None)
        if metric is None:
            return None
        if metric.rerank_k:
            log.warning("%s: the re-ranked order (rerank_k %d) is not written; no ranking file", self.name,
                        metric.rerank_k)
            return None
        pools = metric.pools()
        text_lists, image_lists = top_candidates(pools.image_embeddings, pools.text_embeddings, pools.text_to_image,
                                                 self.RANKING_LENGTH, metric.chunk_size)
        records = [dataset.records[int(key)] for key in pools.image_keys]
        image_ids = [record["image_id"] for record in records]
        sentids = [records[int(i)]["sentids"][int(slot)] for i, slot in zip(pools.text_to_image, pools.text_slots)]
        return {"top_k": self.RANKING_LENGTH,
                "text_to_image": [{"sentid": sentids[t], "image_ids": [image_ids[i] for i in row]}
                                  for t, row in enumerate(text_lists.tolist())],
                "image_to_text": [{"image_id": image_ids[i], "sentids": [sentids[t] for t in row]}
                                  for i, row in enumerate(image_lists.tolist())]}

    def write_predictions(self, predictions: Any, path: str) -> None:
        write_json(predictions, path)


class CaptioningBuilder(KarpathyCaptionsBuilder):
    """Train: one sample per (image, caption) for teacher forcing. Val/test: one per image,
    `references` = all its captions, `input_ids` = its first caption."""

    TASK = "captioning"
    MAPPER = CaptioningMapper
    DEFAULT_CONFIG = dataset_defaults(
        splits=KARPATHY_SPLITS,
        generation=GENERATION_DEFAULTS,
        losses=[{"type": "caption_cross_entropy", "params": {}}],
        metrics=[{"type": "caption_metrics", "params": {}}],
    )

    def eval_records(self, images: list[dict]) -> list[dict]:
        return [dict(image, caption=image["captions"][0], caption_index=None) for image in images]

    def format_predictions(self, batch: Batch, outputs: dict[str, torch.Tensor]) -> list[dict]:
        """The COCO caption results [{"image_id", "caption"}], decoded as `caption_metrics` decodes."""
        from vlfw.metrics.captioning import decode_caption

        tokenizer = self.text_processor
        generated = outputs["generated_ids"].detach().cpu()
        return [{"image_id": int(image_id), "caption": decode_caption(ids, tokenizer.sep_id, tokenizer)}
                for image_id, ids in zip(batch["image_id"], generated)]

    def write_predictions(self, predictions: list[dict], path: str) -> None:
        write_json(predictions, path)


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
