"""Readers for images and precomputed region features (BUTD TSV, per-image npy).

All file access goes through iopath's PathManager. Feature readers return
`{"region_features" (N, D) float32, "region_boxes" (N, 4) xyxy pixels,
"region_class_probs" (N, C) when present, "image_size" (2,) [w, h]}`, capped to max_regions.
"""

from __future__ import annotations

import base64
import csv
import io
import os
import sys
import threading
from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from vlfw.datasets.records import BadRecordError, path_manager
from vlfw.errors import DataError
from vlfw.restricted_pickle import PickleLoadError, UnsafePickleError, load_npy_object

BOX_TOLERANCE = 1.0  # pixels a detector box may stick out of the image (rounding)


class ImageReader:
    """Opens an image by content (the extension may lie), as EXIF-free RGB."""

    def read(self, path: str, record: str = "") -> Image.Image:
        where = f"{record}" if record else "image"
        try:
            with path_manager.open(path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            raise BadRecordError(path, where, "image file not found", kind="image") from None
        except OSError as error:
            raise BadRecordError(path, where, f"cannot read image file ({error})", kind="image") from None
        return self.decode(data, path, record)

    def decode(self, data: bytes, path: str, record: str = "") -> Image.Image:
        """The image in `data` (the bytes of `path`, e.g. a member of a tar shard) as EXIF-free RGB."""
        where = f"{record}" if record else "image"
        try:
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                rgb = image.convert("RGB")
        except UnidentifiedImageError:  # its message names an in-memory buffer, not the file
            raise BadRecordError(path, where, "corrupt or unreadable image (not an image format PIL can read)",
                                 kind="image") from None
        except (OSError, ValueError, SyntaxError) as error:
            raise BadRecordError(path, where, f"corrupt or unreadable image ({error})", kind="image") from None
        rgb.info = {}  # drop EXIF / ICC metadata: boxes refer to the stored pixels
        return rgb


def check_regions(boxes: np.ndarray, features: np.ndarray, width: float, height: float) -> str | None:
    """Why a feature record is bad, or None."""
    if not np.isfinite(features).all():
        return "region features contain NaN or Inf"
    if not np.isfinite(boxes).all():
        return "region boxes contain NaN or Inf"
    if width <= 0 or height <= 0:
        return f"image size {width}x{height} is not positive"
    if len(boxes):
        if (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
            return "a region box has x2 < x1 or y2 < y1"
        if (boxes[:, :2] < -BOX_TOLERANCE).any() or (boxes[:, 2] > width + BOX_TOLERANCE).any() \
                or (boxes[:, 3] > height + BOX_TOLERANCE).any():
            return f"a region box lies outside the {width:g}x{height:g} image"
    return None


def _regions(features: np.ndarray, boxes: np.ndarray, width: float, height: float, max_regions: int,
             class_probs: np.ndarray | None = None) -> dict[str, torch.Tensor]:
    n = min(len(features), max_regions) if max_regions and max_regions > 0 else len(features)
    out = {
        "region_features": torch.from_numpy(np.array(features[:n], dtype=np.float32)),
        "region_boxes": torch.from_numpy(np.array(boxes[:n], dtype=np.float32)),
        "image_size": torch.tensor([width, height], dtype=torch.float32),
    }
    if class_probs is not None:
        out["region_class_probs"] = torch.from_numpy(np.array(class_probs[:n], dtype=np.float32))
    return out


class RegionCache:
    """A least-recently-used cache of decoded regions, bounded in bytes (`features.cache_mb`).

    Reading one image's regions decodes a file (and for npy its info pickle, through the
    restricted pure-Python unpickler: ~1 ms); a VQA image is read once per question and again
    every epoch. Reads return copies, so a mapper that edits a sample's tensors in place cannot
    change the cache. Each DataLoader worker process keeps its own (a pickled reader starts empty)."""

    def __init__(self, budget_mb: float = 0) -> None:
        self.budget = int(float(budget_mb) * 2 ** 20)
        self.entries: OrderedDict[Any, dict[str, torch.Tensor]] = OrderedDict()
        self.bytes = 0
        self.lock = threading.Lock()

    def __getstate__(self) -> dict:
        return {"budget": self.budget}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["budget"] / 2 ** 20)

    @staticmethod
    def _size(value: dict[str, torch.Tensor]) -> int:
        return sum(t.numel() * t.element_size() for t in value.values())

    def get(self, key: Any) -> dict[str, torch.Tensor] | None:
        if self.budget <= 0:
            return None
        with self.lock:
            value = self.entries.get(key)
            if value is None:
                return None
            self.entries.move_to_end(key)
        return {name: tensor.clone() for name, tensor in value.items()}

    def put(self, key: Any, value: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Keeps a copy of `value` (when it fits the budget) and returns `value`."""
        if self.budget <= 0:
            return value
        size = self._size(value)
        if size > self.budget:
            return value
        with self.lock:
            if key in self.entries:
                return value
            self.entries[key] = {name: tensor.clone() for name, tensor in value.items()}
            self.bytes += size
            while self.bytes > self.budget:
                _, dropped = self.entries.popitem(last=False)
                self.bytes -= self._size(dropped)
        return value


class _CachedRegionReads:
    """`read` through the reader's RegionCache; subclasses decode in `_decode`."""

    cache: RegionCache

    def read(self, image_id: str, stem: str = "", record: str = "") -> dict[str, torch.Tensor]:
        key = (str(image_id), stem)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        return self.cache.put(key, self._decode(image_id, stem, record))


class ButdTsvReader(_CachedRegionReads):
    """Bottom-up-attention TSV files, read lazily: an index of line offsets by image_id is built
    once (one pass reading only the first column), then each read seeks to one line."""

    FIELDS = ("image_id", "image_w", "image_h", "num_boxes", "boxes", "features")

    def __init__(self, paths: list[str], max_regions: int = 36, dataset: str = "", cache_mb: float = 0) -> None:
        self.cache = RegionCache(cache_mb)
        if not paths:
            raise DataError(f"{dataset}: visual=regions with features.format=butd_tsv needs features.path (TSV file(s))")
        self.paths = [str(p) for p in paths]
        self.max_regions = int(max_regions)
        self.dataset = dataset
        self._index: dict[str, tuple[int, int, int]] | None = None  # id -> (file, offset, line)
        self._handles: dict[tuple[int, int, int], Any] = {}
        missing = [p for p in self.paths if not path_manager.exists(p)]
        if missing:
            raise DataError(f"{dataset}: region feature file(s) not found: {', '.join(missing)}")

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_handles"] = {}
        return state

    @property
    def index(self) -> dict[str, tuple[int, int, int]]:
        if self._index is None:
            index: dict[str, tuple[int, int, int]] = {}
            for file_number, path in enumerate(self.paths):
                with path_manager.open(path, "rb") as handle:
                    offset = 0
                    for line_number, line in enumerate(handle, 1):
                        key = line.split(b"\t", 1)[0].decode("utf-8", "replace").strip()
                        if key:
                            index.setdefault(key, (file_number, offset, line_number))
                        offset += len(line)
            self._index = index
        return self._index

    def has(self, image_id: str, stem: str = "") -> bool:
        return image_id in self.index or (bool(stem) and stem in self.index)

    def _handle(self, file_number: int):
        key = (os.getpid(), threading.get_ident(), file_number)
        handle = self._handles.get(key)
        if handle is None:
            handle = path_manager.open(self.paths[file_number], "rb")
            self._handles[key] = handle
        return handle

    def _decode(self, image_id: str, stem: str = "", record: str = "") -> dict[str, torch.Tensor]:
        found = self.index.get(str(image_id))
        if found is None and stem:
            found = self.index.get(stem)
        if found is None:
            raise BadRecordError(self.paths[0] if len(self.paths) == 1 else ", ".join(self.paths),
                                 f"image_id {image_id}" + (f" / {stem}" if stem else "") + (f" ({record})" if record else ""),
                                 "no region features for this image", kind="features")
        file_number, offset, line_number = found
        handle = self._handle(file_number)
        handle.seek(offset)
        line = handle.readline().decode("utf-8").rstrip("\r\n")
        path = self.paths[file_number]
        where = f"line {line_number} (image_id {image_id})"
        csv.field_size_limit(sys.maxsize)
        try:
            row = next(csv.reader([line], delimiter="\t", quoting=csv.QUOTE_NONE))
        except (csv.Error, StopIteration) as error:
            raise BadRecordError(path, where, f"unparsable TSV row ({error})", kind="features") from None
        if len(row) < len(self.FIELDS):
            raise BadRecordError(path, where, f"expected {len(self.FIELDS)} tab-separated columns "
                                 f"({', '.join(self.FIELDS)}), found {len(row)}", kind="features")
        try:
            width, height, num_boxes = float(row[1]), float(row[2]), int(row[3])
            boxes = np.frombuffer(base64.b64decode(row[4]), dtype="<f4")
            features = np.frombuffer(base64.b64decode(row[5]), dtype="<f4")
        except (ValueError, TypeError) as error:
            raise BadRecordError(path, where, f"cannot decode the row ({error})", kind="features") from None
        if num_boxes <= 0:
            raise BadRecordError(path, where, f"num_boxes is {num_boxes}", kind="features")
        if boxes.size != num_boxes * 4:
            raise BadRecordError(path, where, f"num_boxes is {num_boxes} but the boxes column holds "
                                 f"{boxes.size} floats (expected {num_boxes * 4})", kind="features")
        if features.size % num_boxes:
            raise BadRecordError(path, where, f"num_boxes is {num_boxes} but the features column holds "
                                 f"{features.size} floats, not a multiple of it", kind="features")
        boxes = boxes.reshape(num_boxes, 4)
        features = features.reshape(num_boxes, -1)
        problem = check_regions(boxes, features, width, height)
        if problem:
            raise BadRecordError(path, where, problem, kind="features")
        return _regions(features, boxes, width, height, self.max_regions)

    def num_classes(self) -> int | None:
        return None  # the BUTD TSV layout carries no class probabilities

    def feature_size(self) -> int | None:
        """Appearance feature size D, from the first row (None for an empty file)."""
        for key in self.index:
            return int(self.read(key)["region_features"].shape[-1])
        return None


class NpyFeatureReader(_CachedRegionReads):
    """Per-image `<stem>.npy` (N, D) and `<stem>_info.npy` (MMF layout).

    `_info.npy` files are pickles: they are read through vlfw.restricted_pickle, which rebuilds
    only plain containers, numbers, strings and numpy arrays and refuses any other global, so
    features.path may point at a directory from an untrusted source.
    """

    def __init__(self, directory: str, max_regions: int = 36, dataset: str = "", cache_mb: float = 0) -> None:
        self.cache = RegionCache(cache_mb)
        if not directory:
            raise DataError(f"{dataset}: visual=regions with features.format=npy needs features.path (a directory)")
        self.directory = str(directory)
        self.max_regions = int(max_regions)
        self.dataset = dataset
        if not path_manager.isdir(self.directory):
            raise DataError(f"{dataset}: region feature directory not found: {self.directory}")

    def _paths(self, stem: str) -> tuple[str, str]:
        return os.path.join(self.directory, f"{stem}.npy"), os.path.join(self.directory, f"{stem}_info.npy")

    def has(self, image_id: str, stem: str = "") -> bool:
        return path_manager.exists(self._paths(stem or image_id)[0])

    def _load_info(self, path: str, where: str) -> dict:
        try:
            with path_manager.open(path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            raise BadRecordError(path, where, "region info file not found", kind="features") from None
        except OSError as error:
            raise BadRecordError(path, where, f"cannot read the region info ({error})", kind="features") from None
        try:
            info = load_npy_object(data, path)  # never np.load(allow_pickle=True): see docs/security.md
        except UnsafePickleError as error:
            raise BadRecordError(path, where, error.reason, kind="features") from None
        except PickleLoadError as error:
            raise BadRecordError(path, where, f"cannot load the region info ({error.reason})", kind="features") from None
        if isinstance(info, np.ndarray) and info.size == 1:
            info = info.item()  # np.save wraps the dict in a 0-d object array
        if not isinstance(info, dict):
            raise BadRecordError(path, where, "the info file does not hold a dict", kind="features")
        return info

    def _decode(self, image_id: str, stem: str = "", record: str = "") -> dict[str, torch.Tensor]:
        stem = stem or str(image_id)
        feature_path, info_path = self._paths(stem)
        where = f"image {stem}" + (f" ({record})" if record else "")
        try:
            with path_manager.open(feature_path, "rb") as handle:
                features = np.load(io.BytesIO(handle.read()), allow_pickle=False)
        except FileNotFoundError:
            raise BadRecordError(feature_path, where, "no region features for this image", kind="features") from None
        except Exception as error:  # noqa: BLE001
            raise BadRecordError(feature_path, where, f"cannot load the features ({error})", kind="features") from None
        info = self._load_info(info_path, where)
        try:
            boxes = np.asarray(info["bbox"], dtype=np.float32).reshape(-1, 4)
            width, height = float(info["image_width"]), float(info["image_height"])
        except (KeyError, ValueError, TypeError) as error:
            raise BadRecordError(info_path, where, f"missing or malformed field ({error}); expected bbox, "
                                 "image_width, image_height", kind="features") from None
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2:
            raise BadRecordError(feature_path, where, f"features have shape {features.shape}, expected (N, D)", kind="features")
        num_boxes = int(info.get("num_boxes", len(boxes)))
        if not (num_boxes == len(boxes) == len(features)):
            raise BadRecordError(info_path, where, f"num_boxes is {num_boxes} but there are {len(boxes)} boxes and "
                                 f"{len(features)} feature rows", kind="features")
        class_probs = info.get("cls_prob")
        if class_probs is not None:
            class_probs = np.asarray(class_probs, dtype=np.float32)
            if class_probs.ndim != 2 or len(class_probs) != num_boxes:
                raise BadRecordError(info_path, where, f"cls_prob has shape {class_probs.shape}, expected ({num_boxes}, C)",
                                     kind="features")
        problem = check_regions(boxes, features, width, height)
        if problem:
            raise BadRecordError(feature_path, where, problem, kind="features")
        return _regions(features, boxes, width, height, self.max_regions, class_probs)

    def feature_size(self) -> int | None:
        """Appearance feature size D, from the first feature file (None for an empty directory)."""
        for name in sorted(path_manager.ls(self.directory)):
            if name.endswith(".npy") and not name.endswith("_info.npy"):
                path = os.path.join(self.directory, name)
                try:
                    with path_manager.open(path, "rb") as handle:
                        features = np.load(io.BytesIO(handle.read()), allow_pickle=False)
                except Exception as error:  # noqa: BLE001  (truncated, not npy, an object array, unreadable)
                    raise DataError(f"{path}: cannot load the region features ({error}); the feature size "
                                    "is read from this first file: fix or remove it") from None
                if features.ndim != 2 or not np.issubdtype(features.dtype, np.number):
                    raise DataError(f"{path}: region features must be an (N, D) array of numbers, got shape "
                                    f"{features.shape} of {features.dtype}; the feature size is read from this "
                                    "first file: fix or remove it")
                return int(features.shape[-1])
        return None

    def num_classes(self) -> int | None:
        """Number of detector classes (from the first info file with cls_prob), or None."""
        for name in sorted(path_manager.ls(self.directory)):
            if name.endswith("_info.npy"):
                info = self._load_info(os.path.join(self.directory, name), name)
                probs = info.get("cls_prob")
                if probs is None:
                    return None
                shape = np.asarray(probs).shape
                if len(shape) != 2:
                    raise DataError(f"{os.path.join(self.directory, name)}: cls_prob has shape {shape}, expected "
                                    "(N, C); the number of detector classes is read from this first file")
                return int(shape[-1])
        return None


def make_feature_reader(dataset: str, fmt: str, features: dict[str, Any], max_regions: int, skip: bool = False,
                        cache_mb: float = 0):
    """The reader for `features.format` from the resolved feature locations; `cache_mb` bounds its
    cache of decoded regions (RegionCache; 0: none)."""
    if fmt == "butd_tsv":
        paths = features.get("butd_tsv")
        return ButdTsvReader(list(paths or []), max_regions, dataset, cache_mb)
    if fmt == "npy":
        return NpyFeatureReader(features.get("npy"), max_regions, dataset, cache_mb)
    raise DataError(f"dataset_config.{dataset}.features.format must be 'butd_tsv' or 'npy', got {fmt!r}")
