"""SNLI-VE: visual entailment (image premise, text hypothesis), 3-way classification."""

from __future__ import annotations

from typing import Any

import torch

from vlfw.data.batch import Batch, Sample
from vlfw.datasets.common import NativeBuilder, NativeMapper, dataset_defaults
from vlfw.datasets.predictions import write_json
from vlfw.datasets.records import BadRecordCounter, BadRecordError, iter_json_lines, join, path_manager, require_files
from vlfw.registry import DATASETS

LABELS = ("entailment", "neutral", "contradiction")
IMAGE_FOLDERS = ("flickr30k_images", "flickr30k-images")


def flickr_id(row: dict) -> str | None:
    """The Flickr30k image id: Flikr30kID ("123.jpg"), Flickr30K_ID ("123"), else from pairID."""
    for key in ("Flickr30K_ID", "Flikr30kID"):
        value = row.get(key)
        if value not in (None, ""):
            value = str(value)
            return value[:-4] if value.endswith(".jpg") else value
    pair = row.get("pairID")
    if isinstance(pair, str) and ".jpg" in pair:
        return pair.split(".jpg", 1)[0]
    return None


class SnliVeMapper(NativeMapper):
    """A hypothesis record -> tokens, the Flickr30k premise image (or its regions), label."""

    def __init__(self, *, image_folder: str, **parts: Any) -> None:
        super().__init__(**parts)
        self.image_folder = image_folder

    def __call__(self, record: dict, index: int, generator: torch.Generator) -> Sample:
        sample = Sample(index=index, id=record["id"], split=record["native"], image_id=record["image_id"],
                        hypothesis=record["hypothesis"])
        self.encode(sample, record["hypothesis"])
        where = f"pairID {record['id']}"
        if self.visual == "images":
            path = join(self.image_folder, f"{record['image_id']}.jpg")
            sample.update(self.load_image(path, where, generator)[0])
        else:
            sample.update(self.load_regions(record["image_id"], record["image_id"], where))
        if record.get("label") is not None:  # None: a predictor's record
            sample.label = torch.tensor(record["label"], dtype=torch.long)
        return sample


@DATASETS.register("snli_ve")
class SnliVeBuilder(NativeBuilder):
    """snli_ve_{train,dev,test}.jsonl; `label` = index in (entailment, neutral, contradiction)."""

    TASK = "classification"
    MAPPER = SnliVeMapper
    DEFAULT_CONFIG = dataset_defaults(
        splits={"train": ["train"], "val": ["dev"], "test": ["test"]},
        losses=[{"type": "cross_entropy", "params": {}}],
        metrics=[{"type": "accuracy", "params": {}}],
    )

    def task_fields(self) -> dict[str, Any]:
        return {"num_labels": len(LABELS), "labels": tuple(LABELS)}

    def image_folder(self) -> str:
        """flickr30k_images/ or flickr30k-images/, whichever exists (looked up once)."""
        if "_image_folder" not in self.__dict__:
            found = [join(self.paths.image_dir, n) for n in IMAGE_FOLDERS if path_manager.isdir(join(self.paths.image_dir, n))]
            self._image_folder = found[0] if found else join(self.paths.image_dir, IMAGE_FOLDERS[0])
        return self._image_folder

    def read_records(self, split: str, bad: BadRecordCounter) -> list[dict]:
        natives = self.native_splits(split)
        expected = {f"{n} annotations": join(self.paths.data_dir, f"snli_ve_{n}.jsonl") for n in natives}
        if self.visual == "images" and not any(path_manager.isdir(join(self.paths.image_dir, f)) for f in IMAGE_FOLDERS):
            expected["image folder (flickr30k_images or flickr30k-images)"] = join(self.paths.image_dir, IMAGE_FOLDERS[0])
        require_files(self.name, expected)
        records = []
        for native in natives:
            path = join(self.paths.data_dir, f"snli_ve_{native}.jsonl")
            for number, row in iter_json_lines(path, bad):
                where = f"line {number}"
                image_id = flickr_id(row)
                hypothesis = row.get("sentence2")
                label = row.get("gold_label")
                if image_id is None:
                    bad.handle(BadRecordError(path, where, "no image id (Flickr30K_ID, Flikr30kID or pairID)"))
                    continue
                if not isinstance(hypothesis, str) or not hypothesis.strip():
                    bad.handle(BadRecordError(path, where, "empty hypothesis (sentence2)"))
                    continue
                if label not in LABELS:
                    bad.handle(BadRecordError(path, where, f"gold_label {label!r} is not one of {', '.join(LABELS)}"))
                    continue
                records.append({"id": str(row.get("pairID", f"{native}:{number}")), "image_id": image_id,
                                "hypothesis": hypothesis.strip(), "label": LABELS.index(label), "native": native})
        return records

    def predict_record(self, inputs: dict[str, Any]) -> tuple[dict, list[str] | None]:
        return {"id": "predict", "image_id": "predict", "hypothesis": str(inputs["hypothesis"]).strip(),
                "label": None, "native": self.native_splits("val")[0]}, None

    def mapper_arguments(self, split: str) -> dict[str, Any]:
        return {**super().mapper_arguments(split), "image_folder": self.image_folder()}

    def format_predictions(self, batch: Batch, outputs: dict[str, torch.Tensor]) -> list[dict]:
        """[{"pairID", "prediction": "entailment"|"neutral"|"contradiction"}] from the argmax of `logits`."""
        best = outputs["logits"].detach().argmax(dim=-1).tolist()
        return [{"pairID": str(i), "prediction": LABELS[b]} for i, b in zip(batch["id"], best)]

    def write_predictions(self, predictions: list[dict], path: str) -> None:
        write_json(predictions, path)
