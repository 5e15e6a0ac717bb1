"""What every native-format builder shares: the common config, path resolution, processors
built by registry name, and the `NativeMapper` base of the per-benchmark sample mappers."""

from __future__ import annotations

import copy
import inspect
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Iterable

import torch
from omegaconf import DictConfig, OmegaConf

from vlfw.data.batch import Sample
from vlfw.datasets.base import DatasetBuilder, RecordDataset, SampleMapper
from vlfw.datasets.readers import ImageReader, make_feature_reader

# re-exported for code that imported them from here before vlfw.datasets.records existed
from vlfw.datasets.records import (  # noqa: F401
    LOAD_KINDS,
    BadRecordCounter,
    BadRecordError,
    Records,
    iter_json_lines,  # noqa: F401
    join,
    json_kind,
    path_manager,
    read_json,
    require_files,
    stable_seed,  # noqa: F401
)
from vlfw.errors import ConfigError, DataError
from vlfw.tasks import TaskInfo, TextInfo

log = logging.getLogger(__name__)

# The dataset config contract of docs/conventions.md; every builder's DEFAULT_CONFIG extends it.
COMMON_DEFAULTS: dict[str, Any] = {
    "source": "files",  # files | shapes
    "data_dir": None,
    "image_dir": None,
    "shapes": {"size": "tiny", "seed": 0},
    "visual": "images",  # images | regions
    # normalize: z-score each feature dimension with train-split statistics (vlfw/datasets/feature_stats.py),
    # applied by the models that read region features; normalize_samples: train samples it is fitted on;
    # cache_mb: decoded regions kept in memory per dataset (and per DataLoader worker), 0: none
    "features": {"format": "butd_tsv", "path": None, "max_regions": 36, "normalize": True, "normalize_samples": 1000,
                 "cache_mb": 512},
    "splits": {},
    "skip_bad_records": False,
    "max_samples": None,
    "seed": 0,  # seeds the per-sample generators (with the epoch and the index)
    # role -> {type: <PROCESSORS name>, params: {...}}
    "processors": {
        "text": {"type": "bert_tokenizer", "params": {"vocab_path": None, "max_length": 40, "lowercase": True}},
        "image": {"type": "image_transform", "params": {"size": 224, "train_augment": None}},
    },
    "losses": [],  # [{type: <LOSSES name>, params: {}}]
    "loss_weights": {},  # loss-term name -> weight (the runner reads it; 1.0 when absent)
    "metrics": [],
}

# processor roles a builder can do without: a null node (or type) turns them off
OPTIONAL_ROLES = ("masking", "region_masking")


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


# -- paths --------------------------------------------------------------------------------------


@dataclass
class ResolvedPaths:
    data_dir: str
    image_dir: str
    features: dict[str, Any] = field(default_factory=dict)  # {"butd_tsv": [files], "npy": dir}
    classes: str | None = None


# -- the sample mapper base ---------------------------------------------------------------------


class NativeMapper(SampleMapper):
    """Shared parts of the native builders' mappers: the tokenizer, the image transform and the
    readers, and loading an image or the regions of one record.

    `text`: the text processor; `image`: the image transform (visual=images); `features`: the
    region feature reader (visual=regions); `train`: whether the split is the training split
    (augmentation); `paths`: where the benchmark's files resolved to.
    """

    def __init__(self, *, dataset: str, split: str, train: bool, visual: str, paths: ResolvedPaths,
                 text: Any, image: Any = None, features: Any = None) -> None:
        self.dataset = dataset
        self.split = split
        self.train = bool(train)
        self.visual = visual
        self.paths = paths
        self.text = text
        self.image = image
        self.features = features
        self.image_reader = ImageReader()

    def load_image(self, path: str, record: str, generator: torch.Generator,
                   boxes: torch.Tensor | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """{"image", "image_size"} and the boxes transformed with the image."""
        image = self.image_reader.read(path, record)
        width, height = image.size
        tensor, boxes_out = self.image(image, boxes, train=self.train, generator=generator)
        return {"image": tensor, "image_size": torch.tensor([width, height], dtype=torch.float32)}, boxes_out

    def load_regions(self, image_id: str, stem: str, record: str) -> dict[str, torch.Tensor]:
        return self.features.read(str(image_id), str(stem), record)

    def encode(self, sample: Sample, text: str, pair: str | None = None) -> dict:
        """Tokenize into the sample's input_ids / token_type_ids; returns the encoding."""
        encoded = self.text(text) if pair is None else self.text(text, pair)
        sample.input_ids, sample.token_type_ids = encoded["input_ids"], encoded["token_type_ids"]
        return encoded


# -- the builder base ---------------------------------------------------------------------------


class NativeBuilder(DatasetBuilder):
    """Shared builder machinery: merged config, resolved paths, processors, feature readers.

    Subclasses implement `read_records(split, bad)` (parse and validate, bad records through
    `bad`) and set MAPPER (their SampleMapper class) and, when it needs more than the shared
    parts, extend `mapper_arguments(split)`.
    """

    DEFAULT_CONFIG: dict = dataset_defaults()
    TASK: str = ""
    BENCHMARK: str | None = None  # name for vlfw.world.layout.benchmark_paths (default: registry name)
    MAPPER: type[NativeMapper] = NativeMapper

    CONFIG_CHOICES = {"source": ("files", "shapes"), "visual": ("images", "regions"),
                      "features.format": ("butd_tsv", "npy")}

    def __init__(self, config: DictConfig | dict | None, name: str) -> None:
        super().__init__(config, name)
        self._paths: ResolvedPaths | None = None
        self._text = None
        self._image = None
        self._features = None
        self._pad_values: dict[str, Any] | None = None

    # -- config -------------------------------------------------------------------------------
    def option(self, dotted: str, default: Any = None) -> Any:
        value = OmegaConf.select(self.config, dotted, default=default)
        if isinstance(value, DictConfig) or OmegaConf.is_list(value):
            return OmegaConf.to_container(value, resolve=True)
        return value

    @property
    def visual(self) -> str:
        return str(self.config.visual)

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
            from vlfw.datasets.sources import locate_shapes_world
            from vlfw.world.layout import benchmark_paths

            root = locate_shapes_world(self.name, self.option("shapes", {}) or {})
            found = benchmark_paths(root, self.BENCHMARK or self.name)
            return ResolvedPaths(
                data_dir=str(found["data_dir"]),
                image_dir=str(found.get("image_dir") or found["data_dir"]),
                features=dict(found.get("features") or {}),
                classes=found.get("classes"),
            )
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
    def processor_spec(self, role: str) -> dict[str, Any] | None:
        """{"type", "params"} of `processors.<role>`; None for an optional role turned off."""
        where = f"dataset_config.{self.name}.processors.{role}"
        node = self.option(f"processors.{role}")
        if node is None or (isinstance(node, dict) and node.get("type") is None and role in OPTIONAL_ROLES):
            if role in OPTIONAL_ROLES:
                return None
            raise ConfigError(f"{where} is not set: give it {{type: <processor name>, params: {{...}}}}")
        if not isinstance(node, dict):
            raise ConfigError(f"{where} must be a mapping {{type: <processor name>, params: {{...}}}}, got {node!r}")
        unknown = sorted(set(node) - {"type", "params"})
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; a processor node is "
                              f"{{type, params}}: set its parameters under {where}.params")
        if not node.get("type"):
            raise ConfigError(f"{where}.type is not set (a PROCESSORS name, e.g. bert_tokenizer)")
        return {"type": str(node["type"]), "params": dict(node.get("params") or {})}

    def build_processor(self, role: str, **injected: Any) -> Any:
        """`PROCESSORS.get(type)(**params, **injected)` for `processors.<role>` (None when off)."""
        from vlfw.registry import PROCESSORS

        spec = self.processor_spec(role)
        if spec is None:
            return None
        where = f"dataset_config.{self.name}.processors.{role}"
        factory = PROCESSORS.get(spec["type"])
        clash = sorted(set(spec["params"]) & set(injected))
        if clash:
            raise ConfigError(f"{where}.params: {', '.join(clash)} is set by the dataset itself; remove it")
        arguments = {**spec["params"], **injected}
        try:
            inspect.signature(factory).bind(**arguments)
        except TypeError as error:
            raise ConfigError(f"{where} ({spec['type']}): {error}") from None
        try:
            return factory(**arguments)
        except (ValueError, TypeError) as error:  # a parameter of the wrong kind or range
            raise ConfigError(f"{where} ({spec['type']}): {error}") from None

    @property
    def text_processor(self):
        """The tokenizer of `processors.text` (built once, shared by the split mappers)."""
        if self._text is None:
            self._text = self.build_processor("text")
        return self._text

    @property
    def image_transform(self):
        if self._image is None:
            self._image = self.build_processor("image")
        return self._image

    @property
    def feature_reader(self):
        if self._features is None:
            self._features = make_feature_reader(
                self.name, str(self.config.features.format), self.paths.features,
                int(self.config.features.max_regions), self.skip_bad_records,
                float(self.config.features.get("cache_mb", 0) or 0),
            )
        return self._features

    # -- records, mapper, dataset -------------------------------------------------------------
    def new_bad_counter(self, split: str) -> BadRecordCounter:
        return BadRecordCounter(self.skip_bad_records, f"{self.name} {split}")

    def read_records(self, split: str, bad: BadRecordCounter) -> list:
        """Parse and validate the native files of `split`; bad records go through `bad`."""
        raise NotImplementedError

    def records(self, split: str) -> Records:
        """The parsed records of `split` (first `max_samples`), with `.bad` (build-time counts logged)."""
        bad = self.new_bad_counter(split)
        items = self.read_records(split, bad)
        bad.report_build()
        return Records(self.limit(items), bad, split)

    def mapper_arguments(self, split: str) -> dict[str, Any]:
        """The shared constructor arguments of this builder's MAPPER."""
        images = self.visual == "images"
        return {"dataset": self.name, "split": split, "train": self.is_train(split), "visual": self.visual,
                "paths": self.paths, "text": self.text_processor,
                "image": self.image_transform if images else None,
                "features": None if images else self.mapper_feature_reader(split)}

    def mapper_feature_reader(self, split: str) -> Any:
        """The region feature reader the mapper of `split` reads (visual=regions)."""
        return self.feature_reader

    def mapper(self, split: str) -> NativeMapper:
        return self.MAPPER(**self.mapper_arguments(split))

    def build(self, split: str) -> RecordDataset:
        records = self.records(split)
        return RecordDataset(self.name, split, records, self.mapper(split), seed=int(self.config.seed))

    # -- collate ------------------------------------------------------------------------------
    def pad_values(self) -> dict[str, Any]:
        """Every `*input_ids` field is padded with the tokenizer's pad id."""
        if self._pad_values is None:
            self._pad_values = {"*input_ids": self.text_processor.pad_id}
        return self._pad_values

    # -- task info ----------------------------------------------------------------------------
    def class_probability_reader(self):
        """The reader asked for the number of detector classes (task_info().detector_classes)."""
        return self.feature_reader

    def text_info(self) -> TextInfo:
        tokenizer = self.text_processor
        return TextInfo(vocab_size=tokenizer.vocab_size, pad_id=tokenizer.pad_id, cls_id=tokenizer.cls_id,
                        sep_id=tokenizer.sep_id, mask_id=tokenizer.mask_id, unk_id=tokenizer.unk_id,
                        processor=self.processor_spec("text"))

    def visual_info(self) -> dict[str, Any]:
        """region_feature_size, detector_classes (and their names when known) with visual=regions."""
        if self.visual != "regions":
            return {}
        info: dict[str, Any] = {}
        reader = self.class_probability_reader()
        classes = reader.num_classes()
        if classes:
            info["detector_classes"] = int(classes)
            names = self.detector_class_names()
            if names is not None and len(names) == classes:
                info["detector_class_names"] = names
        feature_size = reader.feature_size() if hasattr(reader, "feature_size") else None
        if feature_size:
            info["region_feature_size"] = int(feature_size)
        info.update(self.feature_statistics())
        return info

    def feature_statistics(self) -> dict[str, Any]:
        """region_feature_mean / region_feature_std fitted on the train split (features.normalize);
        none without a train split (a val/test-only run takes them from the checkpoint it evaluates)."""
        if not bool(self.option("features.normalize", True)):
            return {}
        if "train" not in (self.option("splits", {}) or {}):
            log.info("%s: no train split to fit the region feature normalisation on; the model's (from its "
                     "checkpoint) is used", self.name)
            return {}
        from vlfw.datasets.feature_stats import fitted_statistics

        mean, std = fitted_statistics(self, int(self.option("features.normalize_samples", 1000)))
        return {"region_feature_mean": mean, "region_feature_std": std}

    def detector_class_names(self) -> tuple[str, ...] | None:
        """The detector class names of the region features (their class file), None when unknown."""
        path = self.paths.classes
        if not path or not path_manager.exists(path):
            return None
        names = read_json(path)
        if not isinstance(names, list):
            raise DataError(f"{path}: expected a JSON list of detector class names, but the file holds "
                            f"{json_kind(names)}")
        return tuple(str(n) for n in names)

    def task_fields(self) -> dict[str, Any]:
        """The task's own TaskInfo fields (answers, labels, choices, number of images)."""
        return {}

    def task_info(self) -> TaskInfo:
        return TaskInfo(task=self.TASK, dataset=self.name, visual=self.visual, text=self.text_info(),
                        **self.visual_info(), **self.task_fields())


def words_of(items: Iterable[Any]) -> list[str]:
    return [str(i) for i in items]
