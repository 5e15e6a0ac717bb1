"""Image pools: render scenes to files and feed them to the feature writer."""

from __future__ import annotations

import json
import os
from collections import deque
from concurrent.futures import Executor, Future

import numpy as np

from vlfw.errors import DataError
from vlfw.world.detector import FeatureWriter
from vlfw.world.render import render_scene, save_image
from vlfw.world.scene import Scene


def render_to_file(path: str, scene: Scene) -> np.ndarray:
    """Renders `scene`, writes it to `path` and returns its pixels (a worker's job)."""
    pixels = render_scene(scene)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_image(pixels, path)
    return pixels


def render_workers(requested: int | None = None) -> int:
    """Processes that render and encode images beside the one extracting features: `requested`,
    or $VLFW_WORLD_WORKERS, or one per core beyond the first (at most 8); 0 renders inline."""
    if requested is None:
        env = os.environ.get("VLFW_WORLD_WORKERS")
        if env is not None:
            try:
                requested = int(env)
            except ValueError:
                raise DataError(f"VLFW_WORLD_WORKERS must be an integer, got {env!r}") from None
        else:
            requested = min(8, (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1) - 1)
    if requested < 0:
        raise DataError(f"the Shapes world's render workers must be >= 0, got {requested}")
    return requested


class ImagePool:
    """Renders each added scene to `path` and, when features are on, records its regions.

    With an `executor` (a process pool), rendering and PNG/JPEG encoding run in its workers while
    this process extracts the features of earlier images; results are consumed in the order the
    scenes were added, so files and features are the same as when rendering inline."""

    def __init__(self, features: FeatureWriter | None, executor: Executor | None = None,
                 in_flight: int = 256) -> None:
        self.features = features
        self.executor, self.in_flight = executor, in_flight
        self.pending: deque[tuple[Future, Scene, str | int, str]] = deque()
        self.num_images = 0

    def add(self, path: str, scene: Scene, image_id: str | int, stem: str | None = None,
            write_image: bool = True) -> None:
        if not write_image:  # a dead link: neither the image nor its regions exist
            return
        if stem is None:
            stem = os.path.splitext(os.path.basename(path))[0]
        self.num_images += 1
        if self.executor is None:
            self._record(render_to_file(path, scene), scene, image_id, stem)
            return
        self.pending.append((self.executor.submit(render_to_file, path, scene), scene, image_id, stem))
        while len(self.pending) > self.in_flight:
            self._drain_one()

    def _drain_one(self) -> None:
        future, scene, image_id, stem = self.pending.popleft()
        self._record(future.result(), scene, image_id, stem)

    def _record(self, pixels: np.ndarray, scene: Scene, image_id: str | int, stem: str) -> None:
        if self.features is not None:
            self.features.add(image_id, stem, scene, pixels)

    def close(self) -> None:
        while self.pending:
            self._drain_one()
        if self.features is not None:
            self.features.close()


def write_json(path: str, obj: object) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, separators=(",", ":"))


def write_jsonl(path: str, rows: list[dict]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def unique_ids(rng: np.random.Generator, n: int, low: int, high: int) -> list[int]:
    """`n` distinct random integers in [low, high), in increasing order."""
    ids: set[int] = set()
    while len(ids) < n:
        ids.update(int(v) for v in rng.integers(low, high, size=n - len(ids)))
    return sorted(ids)


def split_by_fraction(n: int, rng: np.random.Generator, fractions: dict[str, float]) -> list[str]:
    """A split name per item: every split gets at least one item when n allows."""
    names = list(fractions)
    counts = [max(1, int(round(n * f))) for f in fractions.values()]
    counts[0] = n - sum(counts[1:])
    labels = [name for name, c in zip(names, counts) for _ in range(c)]
    order = rng.permutation(n)
    return [labels[int(i)] for i in np.argsort(order)]
