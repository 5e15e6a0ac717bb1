"""Image pools: render scenes to files and feed them to the feature writer."""

from __future__ import annotations

import json
import os

import numpy as np

from vlfw.world.detector import FeatureWriter
from vlfw.world.render import render_scene, save_image
from vlfw.world.scene import Scene


class ImagePool:
    """Renders each added scene to `path` and, when features are on, records its regions."""

    def __init__(self, features: FeatureWriter | None) -> None:
        self.features = features
        self.num_images = 0

    def add(self, path: str, scene: Scene, image_id: str | int, stem: str | None = None,
            write_image: bool = True) -> None:
        if not write_image:  # a dead link: neither the image nor its regions exist
            return
        pixels = render_scene(scene)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        save_image(pixels, path)
        self.num_images += 1
        if self.features is not None:
            if stem is None:
                stem = os.path.splitext(os.path.basename(path))[0]
            self.features.add(image_id, stem, scene, pixels)

    def close(self) -> None:
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
