"""Conceptual-Captions-style alt-text captions with a few dead image links."""

from __future__ import annotations

import os

from vlfw.world.language import caption
from vlfw.world.pools import ImagePool
from vlfw.world.scene import make_rng, sample_scene

FILES = {"training": "Train_GCC-training.tsv", "validation": "Validation_GCC-1.1.0-Validation.tsv"}


def write_cc3m(root: str, seed: int, counts: dict[str, int], pools: dict[str, ImagePool],
               missing_fraction: float = 0.05, width: int = 128, height: int = 128) -> dict:
    """Writes both TSVs; returns {split: {"rows": n, "missing_images": m}}."""
    rng = make_rng(seed, "cc3m")
    base = os.path.join(root, "cc3m")
    os.makedirs(base, exist_ok=True)
    result = {}
    for split, file_name in FILES.items():
        lines, missing = [], 0
        for row in range(counts[split]):
            scene = sample_scene(rng, width, height)
            # Alt-text is lower case without final punctuation; tabs never appear in it.
            text = caption(rng, scene).strip().rstrip(".").lower()
            lines.append(f"{text}\thttps://shapes.invalid/cc3m/{split}/{row}.jpg\n")
            dead = row > 0 and rng.random() < missing_fraction
            # Always at least one dead link in a split of 3+ rows, so loaders meet the case.
            dead = dead or (row == counts[split] - 1 and row >= 2 and missing == 0)
            missing += int(dead)
            pools[split].add(os.path.join(base, split, f"{row:08d}.jpg"), scene, row,
                             stem=f"{row:08d}", write_image=not dead)
        with open(os.path.join(base, file_name), "w", encoding="utf-8", newline="\n") as f:
            f.writelines(lines)
        result[split] = {"rows": counts[split], "missing_images": missing}
    return result
