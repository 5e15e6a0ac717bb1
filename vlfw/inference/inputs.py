"""What a predictor takes as its visual input, and how it reaches a dataset's sample mapper.

A predictor never builds samples itself: it builds a *record* in the dataset's own layout
(`DatasetBuilder.predict_record`) and runs the dataset's evaluation mapper on it, so the tokens,
image transform, region cap and every other field are exactly what evaluation produces. Only the
source of the pixels or region features changes: the mapper's image reader and feature reader
are swapped for ones that hand out the user's inputs (`InputReaders`).

Visual inputs:
- models on images: a path or a PIL image;
- models on region features: a `Regions` (features + boxes + image size), a path to an MMF-layout
  `<stem>.npy` (with `<stem>_info.npy` beside it), or the path of an image of the run's own data
  (the Shapes world, or a benchmark whose features the run read), whose features are looked up
  in the run's feature files; or an image with a `detector` (`vlfw.inference.detector`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from vlfw.datasets.readers import ImageReader, NpyFeatureReader, _regions
from vlfw.datasets.records import BadRecordError
from vlfw.errors import DataError


@dataclass
class Regions:
    """Region features of one image: `features` (N, D), `boxes` (N, 4) xyxy pixels, the image's
    `width` x `height`, and optional detector `class_probs` (N, C)."""

    features: Any
    boxes: Any
    width: float
    height: float
    class_probs: Any = None

    def fields(self, max_regions: int) -> dict[str, torch.Tensor]:
        features = np.asarray(self.features, dtype=np.float32)
        boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        if features.ndim != 2 or len(features) != len(boxes) or len(boxes) == 0:
            raise DataError(f"Regions: features {features.shape} and boxes {boxes.shape} must be (N, D) and (N, 4) "
                            "with the same N > 0")
        probs = None if self.class_probs is None else np.asarray(self.class_probs, dtype=np.float32)
        return _regions(features, boxes, float(self.width), float(self.height), max_regions, probs)


VisualInput = Any  # str | os.PathLike | PIL.Image.Image | Regions


def describe(visual: VisualInput) -> str:
    if isinstance(visual, (str, os.PathLike)):
        return str(visual)
    if isinstance(visual, Image.Image):
        return f"a {visual.width}x{visual.height} PIL image"
    return type(visual).__name__


def open_image(visual: VisualInput) -> Image.Image:
    """An RGB PIL image from a path or a PIL image (one clear error for anything else)."""
    if isinstance(visual, Image.Image):
        return visual.convert("RGB")
    if isinstance(visual, (str, os.PathLike)):
        path = str(visual)
        if not os.path.isfile(path):
            raise DataError(f"image not found: {path}")
        try:
            return ImageReader().read(path)
        except BadRecordError as error:
            raise DataError(f"{path}: {error.reason}") from None
    raise DataError(f"expected an image path or a PIL image, got {describe(visual)}")


_DIGITS = re.compile(r"(\d+)$")


def image_keys(path: str) -> list[tuple[str, str]]:
    """(image_id, stem) pairs under which a feature file may list the image at `path`: the stem
    itself, and the stem's trailing number (COCO_val2014_000000000042 -> 42)."""
    stem = os.path.splitext(os.path.basename(path))[0]
    keys = [(stem, stem)]
    match = _DIGITS.search(stem)
    if match:
        keys.append((str(int(match.group(1))), stem))
    return keys


class FeatureLookup:
    """Region features of an image path from the run's own feature readers (one per dataset)."""

    def __init__(self, readers: Sequence[tuple[str, Any]]) -> None:
        self.readers = list(readers)  # (dataset name, reader)

    def find(self, path: str, max_regions: int) -> dict[str, torch.Tensor] | None:
        for _, reader in self.readers:
            for image_id, stem in image_keys(path):
                if reader.has(image_id, stem):
                    try:
                        return reader.read(image_id, stem, os.path.basename(path))
                    except BadRecordError as error:
                        raise DataError(str(error)) from None
        return None


def npy_regions(path: str, max_regions: int) -> dict[str, torch.Tensor]:
    """The regions of an MMF-layout `<stem>.npy` + `<stem>_info.npy` pair."""
    directory, name = os.path.split(os.path.abspath(path))
    stem = name[: -len(".npy")]
    info = os.path.join(directory, f"{stem}_info.npy")
    if not os.path.isfile(path):
        raise DataError(f"region feature file not found: {path}")
    if not os.path.isfile(info):
        raise DataError(f"{path}: its box file {info} is missing (MMF layout: <stem>.npy + <stem>_info.npy "
                        "with bbox, image_width, image_height)")
    try:
        return NpyFeatureReader(directory, max_regions).read(stem, stem, name)
    except BadRecordError as error:
        raise DataError(str(error)) from None


class InputReaders:
    """Stands in for a mapper's image reader and feature reader, handing out the prepared inputs.

    `keys` are the image stems the mapper asks for, in input order (NLVR2: left, right); with a
    single input every request gets it.
    """

    def __init__(self, items: Sequence[Any], keys: Sequence[str] | None = None) -> None:
        self.items = list(items)
        self.keys = list(keys) if keys else []

    def _pick(self, *names: str) -> Any:
        if len(self.items) == 1:
            return self.items[0]
        for name in names:
            stem = os.path.splitext(os.path.basename(str(name)))[0]
            if stem in self.keys:
                return self.items[self.keys.index(stem)]
        raise DataError(f"internal: the mapper asked for {names}, the inputs are {self.keys}")

    # the ImageReader interface
    def read_image(self, path: str, record: str = "") -> Image.Image:
        return self._pick(path)

    # the feature reader interface
    def has(self, image_id: str, stem: str = "") -> bool:
        return True

    def read(self, image_id: str, stem: str = "", record: str = "") -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in self._pick(stem or image_id, image_id).items()}


class _ImageReaderView:
    def __init__(self, readers: InputReaders) -> None:
        self.readers = readers

    def read(self, path: str, record: str = "") -> Image.Image:
        return self.readers.read_image(path, record)


def with_inputs(mapper: Any, items: Sequence[Any], keys: Sequence[str] | None = None) -> Any:
    """A shallow copy of `mapper` whose image and feature readers return `items`."""
    import copy

    readers = InputReaders(items, keys)
    clone = copy.copy(mapper)
    clone.image_reader = _ImageReaderView(readers)
    clone.features = readers
    return clone
