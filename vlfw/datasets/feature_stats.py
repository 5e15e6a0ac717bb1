"""Per-dimension statistics of region features on a dataset's train split, for z-scoring.

Detector region features (BUTD's pooled ResNet outputs, the Shapes world's stand-in) are
non-negative and dominated by a common mean: on the Shapes world about 80% of their second
moment is the mean vector, and the attributes a question asks about live in small deviations
from it. A model whose first layer is a linear map then starts with nearly the same input for
every region. Standardising each dimension with the train split's mean and standard deviation
removes that (docs/learning.md has the measurements).

The statistics are fitted here, on evenly spaced train samples (no randomness), cached on disk
(keyed by the feature files and the builder's settings), and handed to the model through
`TaskInfo.region_feature_mean` / `region_feature_std`. Models apply them with
`vlfw.modules.encoders.RegionFeatureNorm`, whose buffers are part of the model's state dict: a
checkpoint or exported safetensors file carries the statistics it was trained with, and
evaluating it applies those, not statistics refitted on whatever data the evaluation sees.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any

import numpy as np

from vlfw.cache import cache_dir
from vlfw.datasets.records import path_manager
from vlfw.errors import DataError

log = logging.getLogger(__name__)

STATS_VERSION = "1"
MIN_STD = 1e-6  # a dimension that never varies is left unscaled (std 1)


def _fingerprint(path: str) -> list[Any]:
    """Size and mtime of a file, or of a directory's entries (names and sizes, not contents)."""
    try:
        stat = os.stat(path)
    except OSError:
        return [path, None]
    if not os.path.isdir(path):
        return [path, stat.st_size, stat.st_mtime_ns]
    digest = hashlib.sha256()
    count = 0
    with os.scandir(path) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            try:
                info = entry.stat()
            except OSError:
                continue
            digest.update(f"{entry.name}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
            count += 1
    return [path, count, digest.hexdigest()]


def statistics_key(description: dict[str, Any], paths: list[str]) -> str:
    """The cache key: the builder's relevant settings and the fingerprints of its files."""
    payload = {"version": STATS_VERSION, "settings": description, "files": [_fingerprint(p) for p in sorted(paths)]}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]


def sample_positions(total: int, count: int) -> list[int]:
    """`count` evenly spaced positions in range(total) (all of them when total <= count)."""
    if total <= count:
        return list(range(total))
    return sorted({int(i * total / count) for i in range(count)})


def accumulate(samples: Any) -> tuple[np.ndarray, np.ndarray, int]:
    """(mean, std, number of region rows) over every real region row of the samples.

    `samples` yields Samples holding `region_features` (..., N, D) and optionally `region_mask`
    (..., N) (NLVR2 pads its two images' regions)."""
    total = None
    squares = None
    rows = 0
    for sample in samples:
        features = np.asarray(sample["region_features"], dtype=np.float64)
        flat = features.reshape(-1, features.shape[-1])
        mask = sample.get("region_mask") if hasattr(sample, "get") else None
        if mask is not None:
            flat = flat[np.asarray(mask, dtype=bool).reshape(-1)]
        if total is None:
            total = np.zeros(flat.shape[-1])
            squares = np.zeros(flat.shape[-1])
        total += flat.sum(axis=0)
        squares += (flat * flat).sum(axis=0)
        rows += len(flat)
    if not rows:
        raise DataError("no region features to fit the feature normalisation on (the train split is empty)")
    mean = total / rows
    variance = np.maximum(squares / rows - mean * mean, 0.0)
    std = np.sqrt(variance)
    std[std < MIN_STD] = 1.0
    return mean, std, rows


def load_cached(path: str) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        with open(path) as handle:
            data = json.load(handle)
        mean, std = np.asarray(data["mean"], dtype=np.float64), np.asarray(data["std"], dtype=np.float64)
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent or damaged: fitted again (and rewritten)
    if mean.shape != std.shape or mean.ndim != 1 or not (np.isfinite(mean).all() and np.isfinite(std).all()):
        return None
    return mean, std


def fitted_statistics(builder: Any, count: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per feature dimension on `builder`'s train split, from the cache when fitted
    before with the same files and settings."""
    from vlfw.runner.checkpoint import atomic_write_text

    paths = builder.paths
    feature_paths = [str(p) for p in (paths.features.get("butd_tsv") or [])]
    if paths.features.get("npy"):
        feature_paths.append(str(paths.features["npy"]))
    description = {"builder": type(builder).__name__, "dataset": builder.name, "data_dir": paths.data_dir,
                   "features": builder.option("features"), "splits": builder.option("splits"),
                   "max_samples": builder.option("max_samples"), "count": int(count)}
    annotation_files = [os.path.join(paths.data_dir, n) for n in sorted(os.listdir(paths.data_dir))
                        if os.path.isfile(os.path.join(paths.data_dir, n))] if path_manager.isdir(paths.data_dir) else []
    key = statistics_key(description, feature_paths + annotation_files)
    cache_path = os.path.join(cache_dir(), "feature_stats", f"{builder.name}-{key}.json")
    cached = load_cached(cache_path)
    if cached is None:
        dataset = builder.build("train")
        positions = sample_positions(len(dataset), int(count))
        mean, std, rows = accumulate(dataset[i] for i in positions)
        try:
            atomic_write_text(cache_path, json.dumps({"dataset": builder.name, "samples": len(positions), "rows": rows,
                                                      "mean": mean.tolist(), "std": std.tolist()}))
        except Exception as error:  # noqa: BLE001  (a read-only cache only costs the refit next time)
            log.warning("could not cache the feature statistics of %s at %s: %s", builder.name, cache_path, error)
        log.info("%s: region feature normalisation fitted on %d train samples (%d regions)",
                 builder.name, len(positions), rows)
        cached = (mean, std)
    mean, std = cached
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)
