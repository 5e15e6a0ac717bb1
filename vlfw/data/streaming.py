"""The training batch stream of a streaming (webdataset shard) dataset, resumable mid-epoch.

The counterpart of `vlfw.data.multitask.DatasetStream` for `vlfw.datasets.shards.ShardStreamDataset`:
the same interface (`next`, `batches_per_epoch`, `state_dict`), a DataLoader over the iterable
dataset instead of a sampler. Each loader worker reads its own shards and the DataLoader takes
the workers' batches in turn, so after `b` batches of an epoch every worker's share is known;
the position saved is (epoch, b, each worker's raw stream position), the last taken from the
batches the loop consumed, never from what workers prefetched.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch.utils.data import DataLoader

from vlfw.data.workers import loader_worker_init, one_line_worker_errors
from vlfw.distributed import all_gather_object
from vlfw.errors import ConfigError

STREAM_POSITION = "_stream_position"  # the sample field a shard stream puts its (worker, raw position) in


class _StripPosition:
    """Collate that moves the samples' stream position to the batch (the last sample's)."""

    def __init__(self, collate_fn: Callable) -> None:
        self.collate_fn = collate_fn

    def __call__(self, samples: list) -> Any:
        positions = [sample.pop(STREAM_POSITION) for sample in samples]
        batch = self.collate_fn(samples)
        batch[STREAM_POSITION] = positions[-1]
        return batch


class StreamingDatasetStream:
    """An endless stream of one shard dataset's training micro-batches on this rank, resumable."""

    def __init__(self, name: str, dataset: Any, collate_fn: Callable, micro_batch_size: int,
                 num_replicas: int = 1, rank: int = 0, seed: int = 0, num_workers: int = 0,
                 pin_memory: bool = False) -> None:
        self.name = name
        self.dataset = dataset
        self.collate_fn = _StripPosition(collate_fn)
        self.micro_batch_size = int(micro_batch_size)
        self.num_workers = int(num_workers)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.pin_memory = pin_memory
        self.seed = int(seed)
        dataset.configure(num_replicas=num_replicas, rank=rank, num_workers=num_workers,
                          batch_size=self.micro_batch_size, seed=seed)
        self.epoch = 0
        self.consumed = 0  # batches of this epoch the loop has taken
        self.positions: dict[int, int] = {}  # logical worker -> raw stream position after its last batch
        self._iterator = None

    @property
    def batches_per_epoch(self) -> int:
        return self.dataset.batches_per_stream * self.dataset.num_workers

    def _open(self) -> None:
        self.dataset.set_epoch(self.epoch)
        self.dataset.resume(self.consumed, self.positions)
        generator = torch.Generator()
        generator.manual_seed((self.seed * 1_000_003 + self.epoch) * 4099 + self.rank)
        loader = DataLoader(self.dataset, batch_size=self.micro_batch_size, drop_last=True,
                            collate_fn=self.collate_fn, num_workers=self.num_workers, pin_memory=self.pin_memory,
                            generator=generator, worker_init_fn=loader_worker_init)
        self._iterator = iter(loader)

    def next(self):
        """The next micro-batch; rolls over to the next epoch when this one is used up."""
        if self.consumed >= self.batches_per_epoch:
            self.close()
            self.epoch += 1
            self.consumed = 0
            self.positions = {}
        if self._iterator is None:
            self._open()
        with one_line_worker_errors():
            batch = next(self._iterator)
        worker, position = batch.pop(STREAM_POSITION)
        self.positions[int(worker)] = int(position)
        self.consumed += 1
        return batch

    def close(self) -> None:
        self._iterator = None

    def state_dict(self) -> dict[str, Any]:
        """Collective in a distributed run: every rank's worker positions (rank 0 writes them)."""
        return {"epoch": self.epoch, "consumed": self.consumed, "positions": all_gather_object(dict(self.positions)),
                "num_workers": self.num_workers, "num_replicas": self.num_replicas,
                "dataset_size": len(self.dataset), "num_shards": len(self.dataset.index.shards)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, own in (("num_replicas", self.num_replicas), ("num_workers", self.num_workers),
                         ("dataset_size", len(self.dataset)), ("num_shards", len(self.dataset.index.shards))):
            if key not in state:
                raise ValueError(f"the checkpoint's data position of {self.name!r} is not a shard stream's "
                                 f"(no {key}); resume with the same data source")
            if int(state[key]) != own:
                raise ValueError(f"the checkpoint's shard stream of {self.name!r} had {key}={state[key]}, this run "
                                 f"has {own}; a shard stream's position only carries over with the same shards, "
                                 "ranks and loader workers")
        self.close()
        self.epoch = int(state["epoch"])
        self.consumed = int(state["consumed"])
        self.positions = {int(k): int(v) for k, v in dict(state["positions"][self.rank]).items()}


def check_streaming(name: str, dataset: Any) -> None:
    if not hasattr(dataset, "configure"):
        raise ConfigError(f"dataset {name!r} gives an iterable dataset without a shard layout (configure); "
                          "training streams support map-style datasets and vlfw's shard streams")
