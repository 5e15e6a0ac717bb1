"""The training split of a shard source as an IterableDataset: one stream per (rank, loader worker).

See vlfw.datasets.shards for the shard layout and the index; vlfw.data.streaming for the batch
stream the runner reads it through (and its resume position).
"""

from __future__ import annotations

import itertools
import logging
import random
from typing import Any, Iterator

import torch
from torch.utils.data import IterableDataset, get_worker_info
from webdataset.filters import shuffle as buffer_shuffle

from vlfw.datasets.base import EpochBadRecords
from vlfw.datasets.records import BadRecordCounter, BadRecordError, stable_seed
from vlfw.datasets.shards import STREAM_POSITION, ShardIndex, iter_shard, shard_record
from vlfw.errors import ConfigError, DataError

log = logging.getLogger(__name__)


class ShardStreamDataset(EpochBadRecords, IterableDataset):
    """The training split of a shard source: one stream per (rank, loader worker).

    Stream `s` of `S = ranks x workers` reads shards s, s + S, s + 2S, ... (in an order shuffled
    per epoch), through a shuffle buffer seeded by (seed, epoch, stream), and yields exactly
    `batches_per_stream x batch_size` samples per epoch: the largest stream's sample count,
    rounded down to whole batches; smaller streams start their shards over to fill up (the
    repeats of `DistributedSampler` padding). A sample that turns out bad when decoded is counted
    (skip_bad_records) and the stream's next sample takes its place.

    The position is (epoch, batches consumed, each worker's raw stream position); `resume`
    makes the next loader replay each worker's stream up to its position without decoding.
    """

    MAX_CONSECUTIVE_BAD = 64

    def __init__(self, name: str, split: str, index: ShardIndex, mapper: Any, bad: BadRecordCounter,
                 seed: int = 0, shuffle_buffer: int = 1000) -> None:
        self.name = name
        self.split = split
        self.index = index
        self.mapper = mapper
        self.bad = bad
        self.seed = int(seed)  # per-sample generators (masking, augmentation), as RecordDataset
        self.shuffle_seed = int(seed)  # shard order and buffer (the run's seed once configured)
        self.shuffle_buffer = int(shuffle_buffer)
        self.epoch = 0
        self._epoch_started = False
        self.num_replicas, self.rank, self.num_workers, self.batch_size = 1, 0, 1, 1
        self.start_batches = 0
        self.start_positions: dict[int, int] = {}

    def __len__(self) -> int:
        return self.index.total

    # -- layout --------------------------------------------------------------------------------
    def configure(self, *, num_replicas: int = 1, rank: int = 0, num_workers: int = 0, batch_size: int = 1,
                  seed: int | None = None) -> None:
        """Split the shards over `num_replicas` ranks x `num_workers` loader workers (0: one stream)."""
        workers = max(1, int(num_workers))
        streams = int(num_replicas) * workers
        if streams > len(self.index.shards):
            raise ConfigError(f"dataset {self.name!r}: {len(self.index.shards)} shard(s) cannot feed {num_replicas} "
                              f"rank(s) x {workers} loader worker(s) = {streams} streams; write more, smaller "
                              "shards (vlfw_prepare shards --samples-per-shard) or lower training.num_workers")
        self.num_replicas, self.rank, self.num_workers, self.batch_size = int(num_replicas), int(rank), workers, int(batch_size)
        if seed is not None:
            self.shuffle_seed = int(seed)
        if self.batches_per_stream < 1:
            raise ConfigError(f"dataset {self.name!r}: its largest shard stream holds {self.largest_stream} samples, "
                              f"too few for a micro-batch of {batch_size}; lower the batch size")

    @property
    def num_streams(self) -> int:
        return self.num_replicas * self.num_workers

    def stream_shards(self, stream: int) -> list[int]:
        return list(range(stream, len(self.index.shards), self.num_streams))

    def stream_size(self, stream: int) -> int:
        return sum(self.index.shards[n].count for n in self.stream_shards(stream))

    @property
    def largest_stream(self) -> int:
        return max(self.stream_size(s) for s in range(self.num_streams))

    @property
    def batches_per_stream(self) -> int:
        return self.largest_stream // self.batch_size

    # -- epochs and positions ------------------------------------------------------------------
    def resume(self, batches: int, positions: dict[int, int]) -> None:
        """The next iteration starts after `batches` batches of this epoch; worker w's stream at
        raw position positions[w]."""
        self.start_batches = int(batches)
        self.start_positions = {int(k): int(v) for k, v in positions.items()}

    def worker_batches(self, worker: int, batches: int) -> int:
        """Batches of worker `worker` among the first `batches` of an epoch (the loader takes them in turn)."""
        return max(0, (batches - worker + self.num_workers - 1) // self.num_workers)

    def generator(self, index: int) -> torch.Generator:
        return torch.Generator().manual_seed(stable_seed(self.seed, self.epoch, index))

    def raw_stream(self, stream: int) -> Iterator[dict]:
        """Stream `stream`'s raw samples of this epoch, its shards started over as often as needed."""
        shards = self.stream_shards(stream)
        shuffled = self.shuffle_buffer > 1
        for cycle in itertools.count():
            order = list(shards)
            if shuffled:
                random.Random(stable_seed(self.shuffle_seed, self.epoch, stream, cycle)).shuffle(order)
            samples: Iterator[dict] = (raw for n in order for raw in iter_shard(self.index, n))
            if shuffled:
                seed = stable_seed(self.shuffle_seed, self.epoch, stream, cycle, 1)
                samples = buffer_shuffle(self.shuffle_buffer, self.shuffle_buffer, seed=seed)(samples)
            count = 0
            for raw in samples:
                count += 1
                yield raw
            if count == 0:
                raise DataError(f"{self.name} {self.split}: the shards of stream {stream} hold no samples: "
                                f"{', '.join(self.index.shards[n].path for n in shards)}")

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        loader_worker = info.id if info is not None else 0
        # the resumed loader's first worker plays the worker whose batch is due next
        worker = (loader_worker + self.start_batches) % self.num_workers
        stream = self.rank * self.num_workers + worker
        remaining = (self.batches_per_stream - self.worker_batches(worker, self.start_batches)) * self.batch_size
        position = self.start_positions.get(worker, 0)
        raw_samples = self.raw_stream(stream)
        for _ in range(position):  # replay without decoding: same shard order, same buffer draws
            next(raw_samples)
        consecutive_bad = 0
        while remaining > 0:
            raw = next(raw_samples)
            position += 1
            try:
                record = shard_record(raw, self.split)
                sample = self.mapper(record, record["index"], self.generator(record["index"]))
            except BadRecordError as error:
                if not self.bad.skip:
                    raise
                self.bad.count_load(error)
                consecutive_bad += 1
                if consecutive_bad >= self.MAX_CONSECUTIVE_BAD:
                    raise DataError(f"{self.name} {self.split}: {consecutive_bad} consecutive bad samples in the "
                                    f"shards of stream {stream}; last: {error}") from None
                continue
            consecutive_bad = 0
            sample[STREAM_POSITION] = (worker, position)
            remaining -= 1
            yield sample
