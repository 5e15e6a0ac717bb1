"""What every native-format builder shares: the common config, path resolution, bad-record
handling and the `NativeDataset` base with reproducible per-sample randomness."""

from __future__ import annotations

import copy
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from iopath.common.file_io import PathManager
from omegaconf import DictConfig, OmegaConf

from vlfw.data.batch import Sample
from vlfw.datasets.base import DatasetBuilder
from vlfw.errors import DataError

log = logging.getLogger(__name__)

path_manager = PathManager()

# The dataset config contract of docs/conventions.md; every builder's DEFAULT_CONFIG extends it.
COMMON_DEFAULTS: dict[str, Any] = {
    "source": "files",  # files | shapes
    "data_dir": None,
    "image_dir": None,
    "shapes": {"size": "tiny", "seed": 0},
    "visual": "images",  # images | regions
    "features": {"format": "butd_tsv", "path": None, "max_regions": 36},
    "splits": {},
    "skip_bad_records": False,
    "max_samples": None,
    "seed": 0,  # seeds the per-sample generators (with the epoch and the index)
    "processors": {
        "text": {"vocab_path": None, "max_length": 40, "lowercase": True},
        "image": {"size": 224, "train_augment": None},
    },
    "losses": [],
    "metrics": [],
}


def _deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def dataset_defaults(**overrides: Any) -> dict[str, Any]:
    """COMMON_DEFAULTS with a builder's own keys merged in (nested dicts merge, lists replace)."""
    return _deep_merge(COMMON_DEFAULTS, overrides)


# -- bad records --------------------------------------------------------------------------------


class BadRecordError(DataError):
    """One bad record: names the file and the record (line number or id) and why."""

    def __init__(self, file: str, record: str, reason: str, kind: str = "record") -> None:
        self.file = str(file)
        self.record = str(record)
        self.reason = reason
        self.kind = kind  # record | image | features
        super().__init__(
            f"{self.file}: bad {kind} at {self.record}: {reason} "
            "(fix or remove it, or set skip_bad_records=true to count and skip such records)"
        )


LOAD_KINDS = ("record", "image", "features")


class BadRecordCounter:
    """Build-time skips (this process) and load-time skips (shared across loader workers).

    `skip=False`: `handle` raises the error. `skip=True`: it is counted and logged at debug
    level; the totals are logged once per build and at the end of each epoch.
    """

    def __init__(self, skip: bool, what: str) -> None:
        self.skip = bool(skip)
        self.what = what
        self.build_counts: dict[str, int] = {}
        self.examples: dict[str, str] = {}
        # shared memory: increments made in DataLoader worker processes are seen here
        self._load_counts = torch.zeros(len(LOAD_KINDS), dtype=torch.int64).share_memory_()

    def handle(self, error: BadRecordError) -> None:
        """At build time: raise, or count the record as skipped."""
        if not self.skip:
            raise error
        key = f"{error.kind}: {error.reason}"
        self.build_counts[key] = self.build_counts.get(key, 0) + 1
        self.examples.setdefault(key, f"{error.file} at {error.record}")
        log.debug("skipped %s", error)

    def drop(self, reason: str, count: int = 1) -> None:
        """Count records dropped by policy (not errors), e.g. VQA questions without a target."""
        if count:
            self.build_counts[reason] = self.build_counts.get(reason, 0) + count

    def count_load(self, error: BadRecordError) -> None:
        kind = error.kind if error.kind in LOAD_KINDS else "record"
        self._load_counts[LOAD_KINDS.index(kind)] += 1
        log.warning("skipped (%s) %s", self.what, error)

    def report_build(self) -> None:
        if self.build_counts:
            parts = [f"{n} x {reason}" + (f" (e.g. {self.examples[reason]})" if reason in self.examples else "")
                     for reason, n in self.build_counts.items()]
            log.warning("%s: dropped %d records at build time: %s", self.what, sum(self.build_counts.values()), "; ".join(parts))

    def load_counts(self) -> dict[str, int]:
        return {kind: int(n) for kind, n in zip(LOAD_KINDS, self._load_counts.tolist()) if n}

    def reset_load(self) -> None:
        self._load_counts.zero_()

    def report(self) -> dict[str, dict[str, int]]:
        return {"build": dict(self.build_counts), "load": self.load_counts()}


# -- JSON helpers -------------------------------------------------------------------------------


def read_json(path: str) -> Any:
    """A whole JSON document; a file that does not parse is an error (it is not a record)."""
    try:
        with path_manager.open(path, "r", encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except json.JSONDecodeError as error:
        raise DataError(
            f"{path}: not valid JSON at line {error.lineno} column {error.colno} ({error.msg}); "
            "the file is truncated or corrupt: download it again"
        ) from None


def iter_json_lines(path: str, bad: BadRecordCounter) -> Iterator[tuple[int, dict]]:
    """(1-based line number, record) of a JSON-lines file; unparsable lines go through `bad`."""
    try:
        handle = path_manager.open(path, "r", encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    with handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                bad.handle(BadRecordError(path, f"line {number}", f"not valid JSON ({error.msg})"))
                continue
            if not isinstance(record, dict):
                bad.handle(BadRecordError(path, f"line {number}", "a record must be a JSON object"))
                continue
            yield number, record


# -- paths --------------------------------------------------------------------------------------


@dataclass
class ResolvedPaths:
    data_dir: str
    image_dir: str
    features: dict[str, Any] = field(default_factory=dict)  # {"butd_tsv": [files], "npy": dir}
    classes: str | None = None


def join(*parts: str) -> str:
    return os.path.join(*parts)


def require_files(dataset: str, expected: dict[str, str], hint: str = "") -> None:
    """Raise one DataError listing every expected file (description -> path) that is missing."""
    missing = [(what, path) for what, path in expected.items() if not path_manager.exists(path)]
    if missing:
        listing = "; ".join(f"{what}: {path}" for what, path in missing)
        raise DataError(f"{dataset}: {len(missing)} expected file(s) missing: {listing}.{(' ' + hint) if hint else ''}")


def stable_seed(*numbers: int) -> int:
    """A 63-bit seed mixing several integers (SplitMix64 style) - no Python hash() randomness."""
    state = 0x9E3779B97F4A7C15
    for number in numbers:
        state ^= (int(number) + 0x9E3779B97F4A7C15 + (state << 6) + (state >> 2)) & 0xFFFFFFFFFFFFFFFF
        state = (state * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        state ^= state >> 31
    return state & 0x7FFFFFFFFFFFFFFF


# -- the dataset base ---------------------------------------------------------------------------


class NativeDataset(torch.utils.data.Dataset):
    """A list of parsed native records; `load_sample(index, record)` turns one into a Sample.

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
        load_sample: Callable[["NativeDataset", int, Any], Sample],
        bad: BadRecordCounter,
        seed: int = 0,
        train: bool = False,
    ) -> None:
        self.name = name
        self.split = split
        self.records = list(records)
        self._load_sample = load_sample
        self.bad = bad
        self.seed = int(seed)
        self.train = bool(train)
        self.epoch = 0
        self._epoch_started = False

    def __len__(self) -> int:
        return len(self.records)

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
                return self._load_sample(self, position, self.records[position])
            except BadRecordError as error:
                if not self.bad.skip:
                    raise
                self.bad.count_load(error)
                last = error
        raise DataError(f"{self.name} {self.split}: {attempts} consecutive bad records from index {index}; last: {last}")


# -- the builder base ---------------------------------------------------------------------------


class NativeBuilder(DatasetBuilder):
    """Shared builder machinery: merged config, resolved paths, processors, feature readers."""

    DEFAULT_CONFIG: dict = dataset_defaults()
    TASK: str = ""
    BENCHMARK: str | None = None  # name for vlfw.world.layout.benchmark_paths (default: registry name)

    def __init__(self, config: DictConfig | dict | None, name: str) -> None:
        defaults = OmegaConf.create(self.DEFAULT_CONFIG)
        given = config if config is not None else {}
        merged = OmegaConf.merge(defaults, given if isinstance(given, DictConfig) else OmegaConf.create(given))
        super().__init__(merged, name)
        self._paths: ResolvedPaths | None = None
        self._text = None
        self._image = None
        self._features = None
        self._image_reader = None

    # -- config -------------------------------------------------------------------------------
    def option(self, dotted: str, default: Any = None) -> Any:
        value = OmegaConf.select(self.config, dotted, default=default)
        if isinstance(value, DictConfig) or OmegaConf.is_list(value):
            return OmegaConf.to_container(value, resolve=True)
        return value

    @property
    def visual(self) -> str:
        visual = str(self.config.visual)
        if visual not in ("images", "regions"):
            raise DataError(f"dataset_config.{self.name}.visual must be 'images' or 'regions', got {visual!r}")
        return visual

    @property
    def skip_bad_records(self) -> bool:
        return bool(self.config.skip_bad_records)

    def native_splits(self, split: str) -> list[str]:
        splits = self.option("splits", {}) or {}
        if split not in splits:
            raise DataError(
                f"dataset {self.name!r} has no split {split!r}; dataset_config.{self.name}.splits defines: "
                f"{', '.join(splits) or 'none'}"
            )
        names = splits[split]
        return [str(n) for n in ([names] if isinstance(names, str) else names)]

    def is_train(self, split: str) -> bool:
        return split == "train"

    def limit(self, records: list) -> list:
        max_samples = self.config.max_samples
        return records[: int(max_samples)] if max_samples is not None else records

    # -- paths --------------------------------------------------------------------------------
    @property
    def paths(self) -> ResolvedPaths:
        if self._paths is None:
            self._paths = self._resolve_paths()
        return self._paths

    def _resolve_paths(self) -> ResolvedPaths:
        source = str(self.config.source)
        if source == "shapes":
            try:
                from vlfw.world import ensure_world
                from vlfw.world.layout import benchmark_paths
            except ImportError as error:
                raise DataError(f"dataset {self.name!r}: source=shapes needs the Shapes world (vlfw.world): {error}") from None
            shapes = self.option("shapes", {}) or {}
            root = ensure_world(size=shapes.get("size", "tiny"), seed=int(shapes.get("seed", 0)))
            found = benchmark_paths(root, self.BENCHMARK or self.name)
            return ResolvedPaths(
                data_dir=str(found["data_dir"]),
                image_dir=str(found.get("image_dir") or found["data_dir"]),
                features=dict(found.get("features") or {}),
                classes=found.get("classes"),
            )
        if source != "files":
            raise DataError(f"dataset_config.{self.name}.source must be 'files' or 'shapes', got {source!r}")
        data_dir = self.config.data_dir
        if not data_dir:
            raise DataError(
                f"dataset {self.name!r}: dataset_config.{self.name}.data_dir is not set; point it at the "
                f"benchmark's files (see docs/datasets.md), or set dataset_config.{self.name}.source=shapes "
                "to use the built-in synthetic Shapes world"
            )
        data_dir = os.path.expanduser(str(data_dir))
        if not path_manager.isdir(data_dir):
            raise DataError(f"dataset {self.name!r}: data_dir {data_dir} does not exist or is not a directory")
        image_dir = os.path.expanduser(str(self.config.image_dir)) if self.config.image_dir else data_dir
        features: dict[str, Any] = {}
        path = self.option("features.path")
        if path is not None:
            paths = [path] if isinstance(path, str) else list(path)
            paths = [p if os.path.isabs(os.path.expanduser(p)) else join(data_dir, p) for p in paths]
            fmt = str(self.config.features.format)
            features[fmt] = paths if fmt == "butd_tsv" else paths[0]
        return ResolvedPaths(data_dir=data_dir, image_dir=image_dir, features=features)

    # -- processors ---------------------------------------------------------------------------
    @property
    def text_processor(self):
        if self._text is None:
            from vlfw.processors.text import BertTokenizerProcessor

            self._text = BertTokenizerProcessor(**(self.option("processors.text", {}) or {}))
        return self._text

    @property
    def image_transform(self):
        if self._image is None:
            from vlfw.processors.image import ImageTransform

            self._image = ImageTransform(**(self.option("processors.image", {}) or {}))
        return self._image

    @property
    def image_reader(self):
        if self._image_reader is None:
            from vlfw.datasets.readers import ImageReader

            self._image_reader = ImageReader()
        return self._image_reader

    @property
    def feature_reader(self):
        if self._features is None:
            from vlfw.datasets.readers import make_feature_reader

            self._features = make_feature_reader(
                self.name, str(self.config.features.format), self.paths.features,
                int(self.config.features.max_regions), self.skip_bad_records,
            )
        return self._features

    def new_bad_counter(self, split: str) -> BadRecordCounter:
        return BadRecordCounter(self.skip_bad_records, f"{self.name} {split}")

    def make_dataset(self, split: str, records: list, load_sample: Callable, bad: BadRecordCounter) -> NativeDataset:
        bad.report_build()
        return NativeDataset(self.name, split, self.limit(records), load_sample, bad,
                             seed=int(self.config.seed), train=self.is_train(split))

    # -- visual inputs ------------------------------------------------------------------------
    def load_image(self, path: str, record: str, train: bool, generator: torch.Generator,
                   boxes: torch.Tensor | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """{"image", "image_size"} and the boxes transformed with the image."""
        image = self.image_reader.read(path, record)
        width, height = image.size
        tensor, boxes_out = self.image_transform(image, boxes, train=train, generator=generator)
        return {"image": tensor, "image_size": torch.tensor([width, height], dtype=torch.float32)}, boxes_out

    def load_regions(self, image_id: str, stem: str, record: str) -> dict[str, torch.Tensor]:
        return self.feature_reader.read(str(image_id), str(stem), record)

    def class_probability_reader(self):
        """The reader asked for the number of detector classes (task_info["detector_classes"])."""
        return self.feature_reader

    def text_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"vocab_path": self.text_processor.vocab_path, "vocab_size": self.text_processor.vocab_size}
        if self.visual == "regions":
            reader = self.class_probability_reader()
            classes = reader.num_classes()
            if classes:
                info["detector_classes"] = classes
            feature_size = reader.feature_size() if hasattr(reader, "feature_size") else None
            if feature_size:
                info["region_feature_size"] = feature_size
        info["visual"] = self.visual
        return info

    def task_info(self) -> dict[str, Any]:
        return {"task": self.TASK, **self.text_info()}


def words_of(items: Iterable[Any]) -> list[str]:
    return [str(i) for i in items]
