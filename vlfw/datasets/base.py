"""The dataset-builder interface: native records -> a sample mapper -> Samples.

A builder turns one benchmark's config into three things: `records(split)` (the parsed
records, plain data, and the count of the bad ones), `mapper(split)` (a picklable callable
`(record, index, generator) -> Sample` holding the processors and readers, never the builder)
and `build(split)`, the `RecordDataset` of the two that DataLoaders iterate.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import torch
from omegaconf import DictConfig

from vlfw.data.batch import Batch, Sample, collate
from vlfw.datasets.records import BadRecordCounter, BadRecordError, Records, stable_seed
from vlfw.errors import DataError

log = logging.getLogger(__name__)


class SampleMapper:
    """One record -> one Sample: `mapper(record, index, generator)`.

    Built by `DatasetBuilder.mapper(split)` from the config (processors by registry name,
    readers, resolved paths, the train flag). It must pickle (DataLoader workers get a copy),
    so it holds only plain values, processors and readers: never the builder. Random choices
    (masking, augmentation) come from `generator` only, seeded by (seed, epoch, index).
    A record found bad while loading raises `BadRecordError`.
    """

    def __call__(self, record: Any, index: int, generator: torch.Generator) -> Sample:
        raise NotImplementedError


class EpochBadRecords:
    """Epoch bookkeeping of a dataset with a bad-record counter (`name`, `split`, `bad`, `epoch`,
    `_epoch_started`): map-style record datasets and streamed shard datasets share it."""

    def set_epoch(self, epoch: int) -> None:
        """Call at the start of each epoch: new random choices; logs the last epoch's skips."""
        if self._epoch_started and epoch != self.epoch:
            self.end_epoch()
        self.epoch = int(epoch)
        self._epoch_started = True

    def end_epoch(self) -> dict[str, dict[str, int]]:
        """Log and reset the load-time skip counts of the epoch that ended; returns the report."""
        report = self.bad_record_report()
        if report["load"]:
            log.warning("%s %s epoch %d: skipped bad records while loading: %s",
                        self.name, self.split, self.epoch, report["load"])
        self.bad.reset_load()
        return report

    def bad_record_report(self) -> dict[str, dict[str, int]]:
        """{"build": {reason: n}, "load": {kind: n}}: records skipped at build time and this epoch."""
        return self.bad.report()


class RecordDataset(EpochBadRecords, torch.utils.data.Dataset):
    """A list of parsed records and the mapper that turns one into a Sample.

    Randomness comes only from `generator(index)`, seeded by (seed, epoch, index). A record that
    turns out bad when loaded (corrupt image, bad feature row) raises BadRecordError; with
    skip_bad_records it is counted and the next record (wrapping around) is returned instead,
    carrying its own `index`, so metrics keyed by index count it once.
    """

    MAX_CONSECUTIVE_BAD = 64

    def __init__(
        self,
        name: str,
        split: str,
        records: Sequence[Any],
        mapper: SampleMapper,
        bad: BadRecordCounter | None = None,
        seed: int = 0,
    ) -> None:
        self.name = name
        self.split = split
        self.records = list(records)
        self.mapper = mapper
        if bad is None:
            bad = records.bad if isinstance(records, Records) else BadRecordCounter(False, f"{name} {split}")
        self.bad = bad
        self.seed = int(seed)
        self.epoch = 0
        self._epoch_started = False

    def __len__(self) -> int:
        return len(self.records)

    def generator(self, index: int) -> torch.Generator:
        return torch.Generator().manual_seed(stable_seed(self.seed, self.epoch, index))

    def __getitem__(self, index: int) -> Sample:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"{self.name} {self.split}: index {index} out of range ({len(self)} samples)")
        attempts = min(len(self), self.MAX_CONSECUTIVE_BAD)
        last: BadRecordError | None = None
        for step in range(attempts):
            position = (index + step) % len(self)
            try:
                return self.mapper(self.records[position], position, self.generator(position))
            except BadRecordError as error:
                if not self.bad.skip:
                    raise
                self.bad.count_load(error)
                last = error
        raise DataError(f"{self.name} {self.split}: {attempts} consecutive bad records from index {index}; last: {last}")


class DatasetBuilder:
    """Builds one benchmark's splits.

    Subclasses set DEFAULT_CONFIG (a dict, or a YAML path relative to their module) and
    implement `records(split)` and `mapper(split)` (then `build` combines them), or override
    `build(split)` directly. `task_info()` tells the model what the dataset needs.
    """

    DEFAULT_CONFIG: dict | str = {}

    def __init__(self, config: DictConfig | dict | None, name: str) -> None:
        from vlfw.config import component_config

        # the one merge of a component's defaults (the loader's too): idempotent on a loaded config
        self.config = component_config(type(self), config, path=f"dataset_config.{name}")
        self.name = name

    def records(self, split: str) -> Records:
        """The parsed records of `split` (plain data) with `.bad`, the bad-record counter."""
        raise NotImplementedError(f"dataset {self.name!r} does not implement records(split)")

    def mapper(self, split: str) -> SampleMapper:
        """The picklable `(record, index, generator) -> Sample` of `split`."""
        raise NotImplementedError(f"dataset {self.name!r} does not implement mapper(split)")

    def build(self, split: str) -> torch.utils.data.Dataset:
        """The dataset of `split` ("train", "val" or "test"), yielding Samples."""
        records = self.records(split)
        return RecordDataset(self.name, split, records, self.mapper(split), seed=int(self.config.get("seed", 0) or 0))

    def task_info(self) -> Any:
        """A `vlfw.tasks.TaskInfo`: the task, the visual input, the tokenizer's ids, the answer space."""
        raise NotImplementedError

    def pad_values(self) -> dict[str, Any]:
        """Padding values `collate` uses beyond the defaults (e.g. {"*input_ids": pad id})."""
        return {}

    def collate(self, samples: Sequence[Sample]) -> Batch:
        return collate(samples, self.name, self.pad_values())

    def predict_record(self, inputs: dict[str, Any]) -> tuple[dict, list[str] | None]:
        """A record in this dataset's own layout from a predictor's text inputs (vlfw.inference),
        and the image stems its mapper will ask for, in the order of the visual inputs (None: one
        visual input). The evaluation mapper turns it into the sample evaluation would build."""
        raise DataError(f"dataset {self.name!r} takes no raw inputs for prediction")

    def predictions_file(self, split: str) -> str:
        """The file name of `split`'s predictions under <save_dir>/predictions/."""
        return f"{self.name}_{split}.json"

    def format_predictions(self, batch: Batch, outputs: dict[str, torch.Tensor]) -> list[dict]:
        """Rows of the benchmark's official submission format for one batch."""
        raise NotImplementedError(f"dataset {self.name!r} writes no prediction files")

    def split_predictions(self, dataset: Any, metrics: Sequence[Any]) -> Any:
        """The predictions of a file that needs the whole split at once (retrieval rankings), made
        from the gathered `metrics` after the pass; None: the file is made of `format_predictions` rows."""
        return None

    def write_predictions(self, predictions: list[dict], path: str) -> None:
        """Write rows from `format_predictions` (or `split_predictions`) in the official submission format."""
        raise NotImplementedError(f"dataset {self.name!r} writes no prediction files")
