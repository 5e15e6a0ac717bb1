"""Samplers that are resumable mid-epoch and sharded over distributed ranks.

The training sampler draws a fresh permutation per epoch from (seed, epoch) and shards it over
ranks the way `torch.utils.data.DistributedSampler` does (the permutation is padded by
repeating its head so every rank gets the same number of samples). Its position is the number
of samples the training loop has *consumed* in the current epoch, advanced by the loop itself
(`advance`), never by what loader workers prefetched, so a checkpoint resumes exactly.
"""

from __future__ import annotations

import math
from typing import Any, Iterator

import torch
from torch.utils.data import Sampler


def _pad_and_shard(indices: list[int], num_replicas: int, rank: int) -> list[int]:
    total = math.ceil(len(indices) / num_replicas) * num_replicas
    padding = total - len(indices)
    if padding:
        repeats = math.ceil(padding / len(indices))
        indices = indices + (indices * repeats)[:padding]
    return indices[rank:total:num_replicas]


class ResumableDistributedSampler(Sampler[int]):
    """Shuffled (or ordered) sharded sampler whose position survives a checkpoint."""

    def __init__(self, dataset_size: int, num_replicas: int = 1, rank: int = 0, shuffle: bool = True,
                 seed: int = 0) -> None:
        if dataset_size <= 0:
            raise ValueError("cannot sample from an empty dataset")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        self.dataset_size = dataset_size
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.consumed = 0  # samples of this rank's shard already used in `epoch`
        self.num_samples = math.ceil(dataset_size / num_replicas)

    def epoch_indices(self, epoch: int | None = None) -> list[int]:
        """This rank's full shard of `epoch` (default: the current one)."""
        epoch = self.epoch if epoch is None else epoch
        if self.shuffle:
            generator = torch.Generator()
            generator.manual_seed(self.seed * 1_000_003 + epoch)
            indices = torch.randperm(self.dataset_size, generator=generator).tolist()
        else:
            indices = list(range(self.dataset_size))
        return _pad_and_shard(indices, self.num_replicas, self.rank)

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_indices()[self.consumed:])

    def __len__(self) -> int:
        return self.num_samples - self.consumed

    def set_epoch(self, epoch: int) -> None:
        """Start `epoch` from its beginning."""
        self.epoch = int(epoch)
        self.consumed = 0

    def advance(self, count: int) -> None:
        """Record that the training loop consumed `count` more samples of this epoch."""
        self.consumed += int(count)

    @property
    def exhausted(self) -> bool:
        return self.consumed >= self.num_samples

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "consumed": self.consumed, "seed": self.seed,
                "dataset_size": self.dataset_size, "num_replicas": self.num_replicas}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["dataset_size"]) != self.dataset_size:
            raise ValueError(
                f"the checkpoint's sampler saw {state['dataset_size']} samples but the dataset has "
                f"{self.dataset_size}; resume with the same data"
            )
        if int(state["num_replicas"]) != self.num_replicas:
            raise ValueError(
                f"the checkpoint was written with {state['num_replicas']} ranks, this run has "
                f"{self.num_replicas}; mid-epoch positions only carry over with the same world size"
            )
        self.epoch = int(state["epoch"])
        self.consumed = int(state["consumed"])
        self.seed = int(state["seed"])


class ShardedEvalSampler(Sampler[int]):
    """Dataset order, sharded over ranks and padded by repetition (duplicates are marked)."""

    def __init__(self, dataset_size: int, num_replicas: int = 1, rank: int = 0) -> None:
        self.dataset_size = dataset_size
        self.num_replicas = num_replicas
        self.rank = rank
        self.indices = _pad_and_shard(list(range(dataset_size)), num_replicas, rank) if dataset_size else []
        # positions past num_real in this shard are padding repeats
        self.num_real = len(range(rank, dataset_size, num_replicas))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
