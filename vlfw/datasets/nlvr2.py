"""NLVR2: is a sentence true of a pair of images? Two images (or region sets) per sample."""

from __future__ import annotations

import csv
import io
from typing import Any

import torch

from vlfw.data.batch import Batch, Sample, pad_stack
from vlfw.datasets.common import NativeBuilder, NativeMapper, dataset_defaults
from vlfw.datasets.records import BadRecordCounter, BadRecordError, iter_json_lines, join, path_manager, require_files
from vlfw.errors import DataError
from vlfw.registry import DATASETS

LABELS = {"False": 0, "True": 1}


def image_stems(identifier: str) -> tuple[str, str]:
    """Left and right image file stems: the identifier without its final -sentid, + -img0/-img1."""
    pair = identifier.rsplit("-", 1)[0]
    return f"{pair}-img0", f"{pair}-img1"


def read_predictions_csv(path: str) -> dict[str, bool]:
    """identifier -> prediction from an `identifier,prediction` CSV (an optional header is skipped)."""
    out: dict[str, bool] = {}
    with path_manager.open(path, "r") as handle:
        for number, row in enumerate(csv.reader(handle), 1):
            if not row or (number == 1 and row[0].strip().lower() == "identifier"):
                continue
            if len(row) != 2 or row[1].strip().lower() not in ("true", "false"):
                raise DataError(f"{path}: line {number}: expected 'identifier,True|False', got {','.join(row)!r}")
            out[row[0].strip()] = row[1].strip().lower() == "true"
    return out


def image_folder(image_dir: str, native: str, directory: str | None) -> str:
    """Where the two images of a record lie: train `images/train/<directory>/`, else `<native>/`
    (or `images/<native>/`)."""
    if native == "train":
        return join(image_dir, "images", "train", str(directory))
    flat = join(image_dir, native)
    if path_manager.isdir(flat):
        return flat
    return join(image_dir, "images", native)


class NLVR2Mapper(NativeMapper):
    """A statement record -> tokens, the two images (or region sets) stacked on a leading 2, label."""

    def __call__(self, record: dict, index: int, generator: torch.Generator) -> Sample:
        sample = Sample(index=index, id=record["identifier"], split=record["native"], sentence=record["sentence"])
        self.encode(sample, record["sentence"])
        stems = image_stems(record["identifier"])
        where = record["identifier"]
        if self.visual == "images":
            folder = image_folder(self.paths.image_dir, record["native"], record["directory"])
            sides = [self.load_image(join(folder, f"{stem}.png"), where, generator)[0] for stem in stems]
            sample.image = pad_stack([s["image"] for s in sides])
            sample.image_size = torch.stack([s["image_size"] for s in sides])
        else:
            sides = [self.load_regions(stem, stem, where) for stem in stems]
            sample.region_features = pad_stack([s["region_features"] for s in sides])
            sample.region_boxes = pad_stack([s["region_boxes"] for s in sides])
            sample.region_mask = pad_stack([torch.ones(len(s["region_features"]), dtype=torch.bool) for s in sides], False)
            if all("region_class_probs" in s for s in sides):
                sample.region_class_probs = pad_stack([s["region_class_probs"] for s in sides])
            sample.image_size = torch.stack([s["image_size"] for s in sides])
        if record["label"] is not None:
            sample.label = torch.tensor(record["label"], dtype=torch.long)
        return sample


@DATASETS.register("nlvr2")
class NLVR2Builder(NativeBuilder):
    """train.json / dev.json / test1.json (JSON lines). `image` (2, 3, H, W) or region fields
    with a leading 2 (left, right) and `region_mask` (2, N); `label` 1 for "True"."""

    TASK = "nlvr2"
    MAPPER = NLVR2Mapper
    DEFAULT_CONFIG = dataset_defaults(
        splits={"train": ["train"], "val": ["dev"], "test": ["test1"]},
        losses=[{"type": "cross_entropy", "params": {}}],
        metrics=[{"type": "nlvr2", "params": {}}],
    )

    def task_fields(self) -> dict[str, Any]:
        return {"num_labels": 2, "labels": ("False", "True"), "num_images": 2}

    def read_records(self, split: str, bad: BadRecordCounter) -> list[dict]:
        natives = self.native_splits(split)
        require_files(self.name, {f"{n} annotations": join(self.paths.data_dir, f"{n}.json") for n in natives})
        if self.visual == "images":
            missing = {}
            for n in natives:
                sub = "images/train" if n == "train" else n
                if not (path_manager.isdir(join(self.paths.image_dir, sub)) or
                        path_manager.isdir(join(self.paths.image_dir, "images", n))):
                    missing[f"{n} image folder"] = join(self.paths.image_dir, sub)
            require_files(self.name, missing)
        records = []
        for native in natives:
            path = join(self.paths.data_dir, f"{native}.json")
            for number, row in iter_json_lines(path, bad):
                where = f"line {number}"
                identifier, sentence = row.get("identifier"), row.get("sentence")
                if not isinstance(identifier, str) or identifier.count("-") < 3:
                    bad.handle(BadRecordError(path, where, f"bad identifier {identifier!r}"))
                    continue
                if not isinstance(sentence, str) or not sentence.strip():
                    bad.handle(BadRecordError(path, f"{where} ({identifier})", "empty sentence"))
                    continue
                label = row.get("label")
                if label is not None and str(label) not in LABELS:
                    bad.handle(BadRecordError(path, f"{where} ({identifier})", f"label {label!r} is not 'True' or 'False'"))
                    continue
                if native == "train" and row.get("directory") is None and self.visual == "images":
                    bad.handle(BadRecordError(path, f"{where} ({identifier})", "train record without 'directory'"))
                    continue
                records.append({"identifier": identifier, "sentence": sentence.strip(), "native": native,
                                "label": None if label is None else LABELS[str(label)],
                                "directory": None if row.get("directory") is None else str(row["directory"])})
        return records

    def predict_record(self, inputs: dict[str, Any]) -> tuple[dict, list[str] | None]:
        identifier = "predict-0-0-0"
        record = {"identifier": identifier, "sentence": str(inputs["statement"]).strip(),
                  "native": self.native_splits("val")[0], "label": None, "directory": None}
        return record, list(image_stems(identifier))

    def format_predictions(self, batch: Batch, outputs: dict[str, torch.Tensor]) -> list[dict]:
        """[{"identifier", "prediction": "True"|"False"}] from the argmax of `logits`."""
        best = outputs["logits"].argmax(dim=-1).tolist()
        return [{"identifier": str(i), "prediction": "True" if b == 1 else "False"} for i, b in zip(batch["id"], best)]

    def predictions_file(self, split: str) -> str:
        return f"{self.name}_{split}.csv"  # the official format is a CSV

    def write_predictions(self, predictions: list[dict], path: str) -> None:
        """The official CSV: one `identifier,True|False` line per example, no header."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        for row in predictions:
            value = row["prediction"]
            value = value if isinstance(value, str) else ("True" if value else "False")
            writer.writerow([row["identifier"], value])
        with path_manager.open(path, "w") as handle:
            handle.write(buffer.getvalue())
