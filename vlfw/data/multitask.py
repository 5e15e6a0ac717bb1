"""Multi-task iteration: which dataset feeds each update, and the per-dataset batch streams.

The dataset of update `u` is a pure function of (seed, u) (see `IterationStrategy.choose`), so
every rank picks the same one without communicating and a resumed run continues the same
sequence. A one-dataset run goes through the same code and draws no random numbers at all.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from vlfw.data.samplers import ResumableDistributedSampler
from vlfw.data.workers import loader_worker_init, one_line_worker_errors
from vlfw.errors import ConfigError
from vlfw.registry import ITERATION_STRATEGIES


class IterationStrategy:
    """Chooses the dataset of every update from fixed probabilities.

    Subclasses implement `weights()` (unnormalised, one per dataset) or override `choose`.
    """

    def __init__(self, dataset_sizes: Mapping[str, int], config: Mapping[str, Any] | None = None,
                 seed: int = 0) -> None:
        if not dataset_sizes:
            raise ConfigError("multi-task iteration needs at least one training dataset")
        self.names = list(dataset_sizes)
        self.sizes = {name: int(size) for name, size in dataset_sizes.items()}
        self.config = config or {}
        self.seed = int(seed)
        weights = np.asarray([float(w) for w in self.weights()], dtype=np.float64)
        if weights.shape != (len(self.names),) or (weights < 0).any() or weights.sum() <= 0:
            raise ConfigError(f"{type(self).__name__} produced invalid dataset weights {weights.tolist()}")
        self._probabilities = weights / weights.sum()
        self._cumulative = np.cumsum(self._probabilities)

    def weights(self) -> Sequence[float]:
        raise NotImplementedError

    def probabilities(self) -> dict[str, float]:
        return {name: float(p) for name, p in zip(self.names, self._probabilities)}

    def choose(self, update: int) -> str:
        """The dataset of update `update` (0-based), identical on every rank and after resume."""
        if len(self.names) == 1:
            return self.names[0]
        draw = np.random.default_rng([self.seed, int(update)]).random()
        position = int(np.searchsorted(self._cumulative, draw, side="right"))
        return self.names[min(position, len(self.names) - 1)]


@ITERATION_STRATEGIES.register("size_proportional")
class SizeProportional(IterationStrategy):
    """p(dataset) proportional to its number of training samples."""

    def weights(self) -> Sequence[float]:
        return [self.sizes[n] for n in self.names]


@ITERATION_STRATEGIES.register("temperature_scaled")
class TemperatureScaled(IterationStrategy):
    """p(dataset) proportional to size^(1/T) (`multitask.temperature`); T=1 is size-proportional."""

    def weights(self) -> Sequence[float]:
        temperature = float(self.config.get("temperature", 1.0))
        if temperature <= 0:
            raise ConfigError(f"multitask.temperature must be > 0, got {temperature}")
        return [self.sizes[n] ** (1.0 / temperature) for n in self.names]


@ITERATION_STRATEGIES.register("fixed_ratio")
class FixedRatio(IterationStrategy):
    """p(dataset) proportional to `multitask.ratios[dataset]`."""

    def weights(self) -> Sequence[float]:
        ratios = dict(self.config.get("ratios") or {})
        missing = [n for n in self.names if n not in ratios]
        if missing:
            raise ConfigError(f"multitask.ratios has no ratio for {missing}; give one per training dataset")
        unknown = [n for n in ratios if n not in self.names]
        if unknown:
            raise ConfigError(f"multitask.ratios names datasets that are not trained on: {unknown}")
        return [float(ratios[n]) for n in self.names]


@ITERATION_STRATEGIES.register("round_robin")
class RoundRobin(IterationStrategy):
    """The datasets in turn, in config order."""

    def weights(self) -> Sequence[float]:
        return [1.0] * len(self.names)

    def choose(self, update: int) -> str:
        return self.names[int(update) % len(self.names)]


class DatasetStream:
    """An endless stream of one dataset's training micro-batches on this rank, resumable."""

    def __init__(self, name: str, dataset: Dataset, collate_fn: Callable, micro_batch_size: int,
                 num_replicas: int = 1, rank: int = 0, seed: int = 0, num_workers: int = 0,
                 pin_memory: bool = False) -> None:
        self.name = name
        self.dataset = dataset
        self.collate_fn = collate_fn
        self.micro_batch_size = int(micro_batch_size)
        self.num_workers = int(num_workers)
        self.pin_memory = pin_memory
        self.seed = int(seed)
        self.rank = rank
        self.sampler = ResumableDistributedSampler(len(dataset), num_replicas, rank, shuffle=True, seed=seed)
        if self.sampler.num_samples < self.micro_batch_size:
            raise ConfigError(
                f"dataset {name!r} has {len(dataset)} training samples, too few for a micro-batch of "
                f"{self.micro_batch_size} per rank on {num_replicas} rank(s); lower the batch size"
            )
        self._iterator = None

    @property
    def batches_per_epoch(self) -> int:
        return self.sampler.num_samples // self.micro_batch_size

    def _open(self) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.sampler.epoch)
        # a private generator: creating a loader iterator must not draw from the global RNG
        generator = torch.Generator()
        generator.manual_seed((self.seed * 1_000_003 + self.sampler.epoch) * 4099 + self.rank)
        loader = DataLoader(self.dataset, batch_size=self.micro_batch_size, sampler=self.sampler,
                            drop_last=True, collate_fn=self.collate_fn, num_workers=self.num_workers,
                            pin_memory=self.pin_memory, generator=generator, worker_init_fn=loader_worker_init)
        self._iterator = iter(loader)

    def next(self):
        """The next micro-batch; rolls over to the next epoch when this one is used up."""
        if self.sampler.num_samples - self.sampler.consumed < self.micro_batch_size:
            self.close()
            self.sampler.set_epoch(self.sampler.epoch + 1)
        if self._iterator is None:
            self._open()
        with one_line_worker_errors():
            batch = next(self._iterator)
        self.sampler.advance(self.micro_batch_size)
        return batch

    def close(self) -> None:
        self._iterator = None

    def state_dict(self) -> dict[str, Any]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.close()
        self.sampler.load_state_dict(state)


class MultitaskIterator:
    """Yields, for each update, the micro-batches of the dataset(s) that train in it."""

    def __init__(self, streams: Mapping[str, DatasetStream], strategy: IterationStrategy,
                 mode: str = "one_per_update") -> None:
        self.streams = dict(streams)
        self.strategy = strategy
        self.mode = mode

    def datasets_for_update(self, update: int) -> list[str]:
        if self.mode == "all_per_update":
            return list(self.streams)
        return [self.strategy.choose(update)]

    def updates_per_epoch(self, accumulation_steps: int) -> int:
        """Updates in one pass over the largest training set."""
        largest = max(self.streams.values(), key=lambda s: len(s.dataset))
        return max(1, largest.batches_per_epoch // accumulation_steps)

    def state_dict(self) -> dict[str, Any]:
        return {name: stream.state_dict() for name, stream in self.streams.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = set(self.streams) - set(state)
        if missing:
            raise ValueError(f"the checkpoint has no data position for datasets {sorted(missing)}")
        for name, stream in self.streams.items():
            stream.load_state_dict(state[name])

    def close(self) -> None:
        for stream in self.streams.values():
            stream.close()


def build_iteration_strategy(config: Any, dataset_sizes: Mapping[str, int], seed: int) -> IterationStrategy:
    """The strategy named by `multitask.iteration_strategy`."""
    name = str(config.get("iteration_strategy", "size_proportional"))
    return ITERATION_STRATEGIES.get(name)(dataset_sizes, config, seed)
