"""Conceptual Captions (CC3M) for pre-training: caption + image or regions, optional masking."""

from __future__ import annotations


from typing import Any

from vlfw.data.batch import Sample
import os

from vlfw.datasets.common import (BadRecordError, NativeBuilder, NativeDataset, dataset_defaults, join,
                                  path_manager, require_files)
from vlfw.registry import DATASETS

TSV_FILES = {"train": "Train_GCC-training.tsv", "val": "Validation_GCC-1.1.0-Validation.tsv"}
IMAGE_FOLDERS = {"train": "training", "val": "validation"}


@DATASETS.register("cc3m")
class CC3MBuilder(NativeBuilder):
    """`caption<TAB>url` TSVs; images `<image_dir>/<training|validation>/<row:08d>.jpg` by 0-based
    row. Rows whose image (or, with regions, whose feature record) is missing are dropped at
    build time and counted. With processors.masking.probability > 0, `input_ids` are whole-word
    masked and `mlm_labels` added; with region_probability > 0, `masked_regions` (N,) bool."""

    TASK = "pretraining"
    DEFAULT_CONFIG = dataset_defaults(
        splits={"train": ["train"], "val": ["val"]},
        processors={"masking": {"probability": 0.15, "region_probability": 0.0}},
        losses=[],
        metrics=[],
    )

    def build(self, split: str) -> NativeDataset:
        natives = self.native_splits(split)
        unknown = [n for n in natives if n not in TSV_FILES]
        if unknown:
            from vlfw.errors import DataError

            raise DataError(f"cc3m: unknown native split(s) {unknown}; known: {', '.join(TSV_FILES)}")
        expected = {f"{n} captions": join(self.paths.data_dir, TSV_FILES[n]) for n in natives}
        if self.visual == "images":
            expected.update({f"{n} image folder": join(self.paths.image_dir, IMAGE_FOLDERS[n]) for n in natives})
        require_files(self.name, expected)
        bad = self.new_bad_counter(split)
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
                    caption = line.split("\t")[0].strip()
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
        return self.make_dataset(split, records, self._load_sample, bad)

    def reader_for(self, native: str):
        """Row numbers restart in each split: use the split's own feature files when there are
        several (a TSV whose name contains "training"/"validation", or an npy sub-folder)."""
        readers = self.__dict__.setdefault("_split_readers", {})
        if native not in readers:
            from vlfw.datasets.readers import make_feature_reader

            fmt, folder = str(self.config.features.format), IMAGE_FOLDERS[native]
            features = dict(self.paths.features)
            if fmt == "butd_tsv":
                paths = list(features.get("butd_tsv") or [])
                features["butd_tsv"] = [p for p in paths if folder in os.path.basename(p)] or paths
            elif features.get("npy") and path_manager.isdir(join(features["npy"], folder)):
                features["npy"] = join(features["npy"], folder)
            readers[native] = make_feature_reader(self.name, fmt, features, int(self.config.features.max_regions))
        return readers[native]

    def class_probability_reader(self):
        return self.reader_for(self.native_splits("train")[0])

    def task_info(self) -> dict[str, Any]:
        info = super().task_info()
        info["mask_id"] = self.text_processor.mask_id
        return info

    def _load_sample(self, dataset: NativeDataset, index: int, record: dict) -> Sample:
        sample = Sample(index=index, id=record["row"], split=record["native"], caption=record["caption"])
        generator = dataset.generator(index)
        tokenizer = self.text_processor
        encoded = tokenizer(record["caption"])
        probability = float(self.option("processors.masking.probability", 0.0) or 0.0)
        if probability > 0:
            from vlfw.processors.masking import whole_word_mask

            masked, labels = whole_word_mask(encoded["input_ids"], encoded["word_ids"], tokenizer.vocab_size,
                                             tokenizer.mask_id, probability, generator, tokenizer.special_ids)
            sample.input_ids, sample.mlm_labels = masked, labels
        else:
            sample.input_ids = encoded["input_ids"]
        sample.token_type_ids = encoded["token_type_ids"]
        where = f"row {record['row']}"
        if self.visual == "images":
            sample.update(self.load_image(record["path"], where, dataset.train, generator)[0])
        else:
            name = f"{record['row']:08d}"
            sample.update(self.reader_for(record["native"]).read(str(record["row"]), name, where))
            region_probability = float(self.option("processors.masking.region_probability", 0.0) or 0.0)
            if region_probability > 0:
                from vlfw.processors.masking import mask_regions

                sample.masked_regions = mask_regions(len(sample.region_features), region_probability, generator)
        return sample



