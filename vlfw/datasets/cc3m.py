"""Conceptual Captions (CC3M) for pre-training: caption + image or regions, optional masking."""

from __future__ import annotations

import os
from typing import Any

import torch

from vlfw.data.batch import Sample
from vlfw.datasets.common import NativeBuilder, NativeMapper, dataset_defaults
from vlfw.datasets.readers import make_feature_reader
from vlfw.datasets.records import BadRecordCounter, BadRecordError, join, path_manager, require_files
from vlfw.datasets.shard_builder import ShardSourceMixin
from vlfw.datasets.shards import shard_regions
from vlfw.errors import DataError
from vlfw.registry import DATASETS

TSV_FILES = {"train": "Train_GCC-training.tsv", "val": "Validation_GCC-1.1.0-Validation.tsv"}
IMAGE_FOLDERS = {"train": "training", "val": "validation"}


class CC3MMapper(NativeMapper):
    """A caption row -> (whole-word masked) tokens, the image or the regions of its split's
    feature files, and optionally `masked_regions`. One generator drives masking and augmentation."""

    def __init__(self, *, masking: Any = None, region_masking: Any = None, split_readers: dict | None = None,
                 **parts: Any) -> None:
        super().__init__(**parts)
        self.masking = masking  # whole_word_masking (None or probability 0: no mlm_labels)
        self.region_masking = region_masking  # region_masking (None or probability 0: no masked_regions)
        self.split_readers = split_readers or {}  # native split -> its feature reader

    def __call__(self, record: dict, index: int, generator: torch.Generator) -> Sample:
        sample = Sample(index=index, id=record["row"], split=record["native"], caption=record["caption"])
        encoded = self.text(record["caption"])
        if self.masking is not None and self.masking.enabled:
            masked = self.masking(encoded, generator)
            sample.input_ids, sample.mlm_labels = masked["input_ids"], masked["mlm_labels"]
        else:
            sample.input_ids = encoded["input_ids"]
        sample.token_type_ids = encoded["token_type_ids"]
        if self.visual == "images":
            sample.update(self.record_image(record, generator))
        else:
            sample.update(self.record_regions(record))
            if self.region_masking is not None and self.region_masking.enabled:
                sample.masked_regions = self.region_masking(len(sample.region_features), generator)
        return sample

    def record_image(self, record: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """{"image", "image_size"} of a record (the shard mapper reads them from the tar member)."""
        return self.load_image(record["path"], f"row {record['row']}", generator)[0]

    def record_regions(self, record: dict) -> dict[str, torch.Tensor]:
        name = f"{record['row']:08d}"
        return self.split_readers[record["native"]].read(str(record["row"]), name, f"row {record['row']}")


class CC3MShardMapper(CC3MMapper):
    """The CC3M mapper on a shard sample: the image decoded from its tar member, the regions from
    its .npy / .boxes.npy / .json members; everything else exactly as CC3MMapper."""

    def __init__(self, *, max_regions: int = 36, **parts: Any) -> None:
        super().__init__(**parts)
        self.max_regions = int(max_regions)

    def record_image(self, record: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        where = f"sample {record['key']}"
        if "image" not in record:
            raise BadRecordError(record["shard"], where, "no image member", kind="image")
        image = self.image_reader.decode(record["image"], record["shard"], f"{where} ({record['image_member']})")
        width, height = image.size
        tensor, _ = self.image(image, None, train=self.train, generator=generator)
        return {"image": tensor, "image_size": torch.tensor([width, height], dtype=torch.float32)}

    def record_regions(self, record: dict) -> dict[str, torch.Tensor]:
        return shard_regions(record, self.max_regions)


@DATASETS.register("cc3m")
class CC3MBuilder(ShardSourceMixin, NativeBuilder):
    """`caption<TAB>url` TSVs; images `<image_dir>/<training|validation>/<row:08d>.jpg` by 0-based
    row. Rows whose image (or, with regions, whose feature record) is missing are dropped at
    build time and counted. With processors.masking (whole_word_masking) probability > 0,
    `input_ids` are whole-word masked and `mlm_labels` added; with processors.region_masking
    (region_masking) probability > 0, `masked_regions` (N,) bool. With `shards` (a spec, or
    {split: spec}), those splits are read from webdataset tar shards instead (vlfw.datasets.shards)."""

    TASK = "pretraining"
    MAPPER = CC3MMapper
    SHARD_MAPPER = CC3MShardMapper
    DEFAULT_CONFIG = dataset_defaults(
        shards=None,  # webdataset shards: a spec (the train split) or {split: spec}; see docs/datasets.md
        shard_shuffle_buffer=1000,  # samples in the shuffle buffer of each shard stream (<= 1: no shuffling)
        splits={"train": ["train"], "val": ["val"]},
        processors={"masking": {"type": "whole_word_masking", "params": {"probability": 0.15}},
                    "region_masking": {"type": "region_masking", "params": {"probability": 0.0}}},
        losses=[],
        metrics=[],
    )

    def check_natives(self, split: str) -> list[str]:
        natives = self.native_splits(split)
        unknown = [n for n in natives if n not in TSV_FILES]
        if unknown:
            raise DataError(f"cc3m: unknown native split(s) {unknown}; known: {', '.join(TSV_FILES)}")
        return natives

    def read_records(self, split: str, bad: BadRecordCounter) -> list[dict]:
        natives = self.check_natives(split)
        expected = {f"{n} captions": join(self.paths.data_dir, TSV_FILES[n]) for n in natives}
        if self.visual == "images":
            expected.update({f"{n} image folder": join(self.paths.image_dir, IMAGE_FOLDERS[n]) for n in natives})
        require_files(self.name, expected)
        records = []
        for native in natives:
            path = join(self.paths.data_dir, TSV_FILES[native])
            folder = join(self.paths.image_dir, IMAGE_FOLDERS[native])
            present = set(path_manager.ls(folder)) if self.visual == "images" else None
            missing = 0
            with path_manager.open(path, "r", encoding="utf-8") as handle:
                for row, line in enumerate(handle):
                    line = line.rstrip("\r\n")
                    if not line:
                        continue
                    columns = line.split("\t")
                    if len(columns) < 2:
                        bad.handle(BadRecordError(path, f"line {row + 1}", "expected 2 tab-separated columns "
                                                  f"(caption, image url), found {len(columns)}"))
                        continue
                    caption = columns[0].strip()
                    if not caption:
                        bad.handle(BadRecordError(path, f"line {row + 1}", "empty caption"))
                        continue
                    name = f"{row:08d}"
                    if present is not None:
                        if f"{name}.jpg" not in present:
                            missing += 1
                            continue
                    elif not self.reader_for(native).has(str(row), name):
                        missing += 1
                        continue
                    records.append({"row": row, "caption": caption, "native": native, "path": join(folder, f"{name}.jpg")})
            bad.drop(f"{native} rows whose {'image' if present is not None else 'region features'} is missing", missing)
        return records

    def reader_for(self, native: str):
        """Row numbers restart in each split: use the split's own feature files when there are
        several (a TSV whose name contains "training"/"validation", or an npy sub-folder)."""
        readers = self.__dict__.setdefault("_split_readers", {})
        if native not in readers:
            fmt, folder = str(self.config.features.format), IMAGE_FOLDERS[native]
            features = dict(self.paths.features)
            if fmt == "butd_tsv":
                paths = list(features.get("butd_tsv") or [])
                features["butd_tsv"] = [p for p in paths if folder in os.path.basename(p)] or paths
            elif features.get("npy") and path_manager.isdir(join(features["npy"], folder)):
                features["npy"] = join(features["npy"], folder)
            readers[native] = make_feature_reader(self.name, fmt, features, int(self.config.features.max_regions),
                                                  cache_mb=float(self.config.features.get("cache_mb", 0) or 0))
        return readers[native]

    def class_probability_reader(self):
        if self.option("shards") is not None:
            return self.shard_feature_info()
        return self.reader_for(self.native_splits("train")[0])

    def mapper_feature_reader(self, split: str) -> None:
        return None  # regions come from the split's own readers (split_readers)

    def mapper_arguments(self, split: str) -> dict[str, Any]:
        arguments = super().mapper_arguments(split)
        if self.visual == "regions" and self.shard_spec(split) is None:
            arguments["split_readers"] = {n: self.reader_for(n) for n in self.check_natives(split)}
        arguments["masking"] = self.build_processor("masking", tokenizer=self.text_processor)
        arguments["region_masking"] = self.build_processor("region_masking")
        return arguments
