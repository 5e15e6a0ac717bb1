"""What `vlfw_prepare shards` writes: the Shapes CC3M or a folder of image + caption pairs, as
samples in the img2dataset shard layout (vlfw.datasets.shards.write_shards writes them)."""

from __future__ import annotations

import io
import json
import os
from typing import Iterator

import numpy as np
from PIL import Image

from vlfw.datasets.shards import IMAGE_SUFFIXES
from vlfw.errors import DataError


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def shapes_cc3m_samples(size: str, seed: int, split: str, cache_dir: str | None = None) -> Iterator[dict]:
    """The Shapes CC3M split `split` (train | val) exactly as the map-style cc3m builder reads it:
    the rows whose image exists, in row order, keyed by the row (`{row:08d}`), with the image file's
    bytes, the caption and, where the world has them, the row's region features."""
    from vlfw.datasets.cc3m import IMAGE_FOLDERS, CC3MBuilder
    from vlfw.datasets.readers import NpyFeatureReader
    from vlfw.world import ensure_world

    ensure_world(size=size, seed=seed, cache_dir=cache_dir)
    builder = CC3MBuilder({"source": "shapes", "shapes": {"size": size, "seed": seed}, "splits": {split: [split]}},
                          "cc3m")
    records = builder.records(split)
    npy = builder.paths.features.get("npy")
    folder = os.path.join(npy, IMAGE_FOLDERS[split]) if npy else None
    reader = NpyFeatureReader(folder, 0, "cc3m") if folder and os.path.isdir(folder) else None
    for record in records:
        key = f"{record['row']:08d}"
        with open(record["path"], "rb") as handle:
            image = handle.read()
        with Image.open(io.BytesIO(image)) as opened:
            width, height = opened.size
        sample = {"__key__": key, "jpg": image, "txt": record["caption"]}
        if reader is not None and reader.has(str(record["row"]), key):
            regions = reader.read(str(record["row"]), key)
            width, height = (float(v) for v in regions["image_size"].tolist())
            sample["npy"] = _npy_bytes(regions["region_features"].numpy())
            sample["boxes.npy"] = _npy_bytes(regions["region_boxes"].numpy())
            if "region_class_probs" in regions:
                sample["cls_prob.npy"] = _npy_bytes(regions["region_class_probs"].numpy())
        sample["json"] = json.dumps({"key": key, "caption": record["caption"], "row": record["row"],
                                     "width": width, "height": height, "status": "success"})
        yield sample


def folder_samples(folder: str, skipped: dict[str, int] | None = None) -> Iterator[dict]:
    """Every image under `folder` (recursively, sorted) that has a caption file of the same stem
    (`a/b.jpg` + `a/b.txt`), keyed 000000000, 000000001, ...; images without a caption and
    unreadable images are counted in `skipped` and left out."""
    if not os.path.isdir(folder):
        raise DataError(f"--source {folder}: not a folder (give a folder of image + .txt caption pairs, or 'shapes')")
    skipped = skipped if skipped is not None else {}
    number = 0
    for directory, subdirectories, names in os.walk(folder):
        subdirectories.sort()
        for name in sorted(names):
            stem, extension = os.path.splitext(name)
            suffix = extension[1:].lower()
            if suffix not in IMAGE_SUFFIXES:
                continue
            path = os.path.join(directory, name)
            caption_path = os.path.join(directory, stem + ".txt")
            if not os.path.isfile(caption_path):
                skipped["images without a .txt caption"] = skipped.get("images without a .txt caption", 0) + 1
                continue
            with open(caption_path, encoding="utf-8") as handle:
                caption = handle.read().strip()
            if not caption:
                skipped["empty captions"] = skipped.get("empty captions", 0) + 1
                continue
            with open(path, "rb") as handle:
                image = handle.read()
            try:
                with Image.open(io.BytesIO(image)) as opened:
                    width, height = opened.size
            except (OSError, ValueError, SyntaxError):
                skipped["unreadable images"] = skipped.get("unreadable images", 0) + 1
                continue
            key = f"{number:09d}"
            number += 1
            yield {"__key__": key, suffix: image, "txt": caption,
                   "json": json.dumps({"key": key, "caption": caption, "source": os.path.relpath(path, folder),
                                       "width": width, "height": height, "status": "success"})}
