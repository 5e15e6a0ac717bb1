"""`ShardSourceMixin`: the splits of a native builder that are read from webdataset shards."""

from __future__ import annotations

import logging
from typing import Any, Iterator

from vlfw.datasets.records import BadRecordCounter, BadRecordError
from vlfw.datasets.shard_stream import ShardStreamDataset
from vlfw.datasets.shards import (
    ShardFeatureInfo,
    ShardIndex,
    build_shard_index,
    expand_shards,
    iter_shard,
    read_records,
    shard_record,
    shard_regions,
)

log = logging.getLogger(__name__)


class ShardSourceMixin:
    """Splits read from shards for a NativeBuilder (put it first in the bases).

    `dataset_config.<name>.shards`: one spec (the train split) or {split: spec}; the train split
    streams (ShardStreamDataset), the other splits are read into memory (RecordDataset, for
    evaluation). Splits without shards are read the builder's usual way. SHARD_MAPPER: the
    mapper class, built from the builder's `mapper_arguments(split)` plus `max_regions`.
    """

    SHARD_MAPPER: type = type(None)

    def shard_spec(self, split: str) -> Any:
        spec = self.option("shards")
        if isinstance(spec, dict):
            return spec.get(split)
        return spec if split == "train" else None

    def shard_index(self, split: str) -> tuple[ShardIndex, BadRecordCounter]:
        """The scanned shards of `split` and their bad-record counter (scanned once per builder)."""
        cache = self.__dict__.setdefault("_shard_indexes", {})
        if split not in cache:
            where = f"dataset_config.{self.name}.shards" + (f".{split}" if isinstance(self.option("shards"), dict) else "")
            paths = expand_shards(self.shard_spec(split), where)
            bad = self.new_bad_counter(split)
            index = build_shard_index(paths, self.visual, bad)
            bad.report_build()
            log.info("%s %s: %d samples in %d shard(s)", self.name, split, index.total, len(paths))
            cache[split] = (index, bad)
        return cache[split]

    def _resolve_paths(self):
        from vlfw.datasets.common import ResolvedPaths

        if str(self.config.source) == "files" and not self.config.data_dir and self.option("shards") is not None:
            return ResolvedPaths(data_dir="", image_dir="", features={})
        return super()._resolve_paths()

    def records(self, split: str):
        from vlfw.datasets.records import Records

        if self.shard_spec(split) is None:
            return super().records(split)
        index, bad = self.shard_index(split)
        return Records(self.limit(read_records(index, split, bad)), bad, split)

    def mapper(self, split: str):
        if self.shard_spec(split) is None:
            return super().mapper(split)
        return self.SHARD_MAPPER(**self.mapper_arguments(split), max_regions=int(self.config.features.max_regions))

    def build(self, split: str):
        from vlfw.datasets.base import RecordDataset

        if self.shard_spec(split) is None:
            return super().build(split)
        if not self.is_train(split):
            return RecordDataset(self.name, split, self.records(split), self.mapper(split), seed=int(self.config.seed))
        index, bad = self.shard_index(split)
        return ShardStreamDataset(self.name, split, index, self.mapper(split), bad, seed=int(self.config.seed),
                                  shuffle_buffer=int(self.config.shard_shuffle_buffer))

    def shard_feature_info(self) -> ShardFeatureInfo:
        splits = self.option("shards")
        split = "train" if self.shard_spec("train") is not None else next(iter(splits))
        return ShardFeatureInfo(self.shard_index(split)[0])

    def feature_statistics(self) -> dict[str, Any]:
        """With train shards: fitted on the first features.normalize_samples train samples in shard
        order (the map-style builders space them evenly over the split: the same samples whenever
        the split has no more than that many)."""
        if self.shard_spec("train") is None:
            return super().feature_statistics()
        if not bool(self.option("features.normalize", True)):
            return {}
        from vlfw.datasets.feature_stats import accumulate

        index, _ = self.shard_index("train")
        count = int(self.option("features.normalize_samples", 1000))
        max_regions = int(self.config.features.max_regions)

        def first_samples() -> Iterator[dict]:
            taken = 0
            for number in range(len(index.shards)):
                for raw in iter_shard(index, number):
                    if taken == count:
                        return
                    try:
                        yield shard_regions(shard_record(raw, "train"), max_regions)
                        taken += 1
                    except BadRecordError:
                        if not self.skip_bad_records:
                            raise

        mean, std, _ = accumulate(first_samples())
        return {"region_feature_mean": tuple(float(v) for v in mean), "region_feature_std": tuple(float(v) for v in std)}
