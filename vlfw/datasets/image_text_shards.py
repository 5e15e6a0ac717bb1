"""`image_text_shards`: any img2dataset-style webdataset output (CC3M, CC12M, LAION subsets) for
pre-training, read through the same mapper as the CC3M builder (vlfw.datasets.cc3m)."""

from __future__ import annotations

from typing import Any

from vlfw.datasets.cc3m import CC3MShardMapper
from vlfw.datasets.common import NativeBuilder, ResolvedPaths, dataset_defaults
from vlfw.datasets.shard_builder import ShardSourceMixin
from vlfw.errors import ConfigError, DataError
from vlfw.registry import DATASETS


@DATASETS.register("image_text_shards")
class ImageTextShardsBuilder(ShardSourceMixin, NativeBuilder):
    """Webdataset tar shards with `{key}.jpg` + `{key}.txt` (+ `{key}.json`) per sample, or region
    features (`{key}.npy`, `{key}.boxes.npy`, `.json` width/height, optional `.cls_prob.npy`).
    `shards`: a spec (the train split) or {split: spec}; a spec is a brace pattern, a folder or a
    list of them. Samples are the CC3M builder's: (masked) caption tokens and the image or regions."""

    TASK = "pretraining"
    MAPPER = CC3MShardMapper
    SHARD_MAPPER = CC3MShardMapper
    DEFAULT_CONFIG = dataset_defaults(
        shards=None,
        shard_shuffle_buffer=1000,
        processors={"masking": {"type": "whole_word_masking", "params": {"probability": 0.15}},
                    "region_masking": {"type": "region_masking", "params": {"probability": 0.0}}},
        losses=[],
        metrics=[],
    )

    def require_shards(self, split: str) -> None:
        if self.shard_spec(split) is None:
            shards = self.option("shards")
            if shards is None:
                raise DataError(f"dataset {self.name!r}: dataset_config.{self.name}.shards is not set; give the "
                                "shard files, e.g. shards=/data/cc12m/{00000..01242}.tar (see docs/datasets.md)")
            defined = ", ".join(shards) if isinstance(shards, dict) else "train"
            raise DataError(f"dataset {self.name!r} has no shards for split {split!r}; "
                            f"dataset_config.{self.name}.shards defines: {defined}")

    def records(self, split: str):
        self.require_shards(split)
        return super().records(split)

    def mapper(self, split: str):
        self.require_shards(split)
        return super().mapper(split)

    def build(self, split: str):
        self.require_shards(split)
        return super().build(split)

    def _resolve_paths(self) -> ResolvedPaths:
        if str(self.config.source) != "files":
            raise ConfigError(f"dataset_config.{self.name}.source must be 'files' (it reads shards only); write the "
                              "Shapes CC3M as shards with `vlfw_prepare shards --source shapes --out DIR`")
        return ResolvedPaths(data_dir="", image_dir="", features={})

    def class_probability_reader(self):
        return self.shard_feature_info()

    def mapper_feature_reader(self, split: str) -> None:
        return None  # regions come from each sample's own members

    def mapper_arguments(self, split: str) -> dict[str, Any]:
        arguments = super().mapper_arguments(split)
        arguments["masking"] = self.build_processor("masking", tokenizer=self.text_processor)
        arguments["region_masking"] = self.build_processor("region_masking")
        return arguments
