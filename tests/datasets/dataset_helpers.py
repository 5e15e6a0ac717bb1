"""Helpers for the dataset tests: the hand-written native fixtures and builder construction."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fixtures"))

import native  # noqa: E402  (tests/fixtures/native.py)

SMALL = {"processors": {"image": {"params": {"size": 32}}, "text": {"params": {"max_length": 24}}}}


def make_builder(name: str, root: str, visual: str = "images", features: dict | None = None, fmt: str = "butd_tsv", **config):
    """A registered builder on fixture files under `root` (visual=regions reads `features`)."""
    from omegaconf import OmegaConf

    import vlfw.components  # noqa: F401  (the core builders)
    from vlfw.registry import DATASETS

    base = {"source": "files", "data_dir": root, "visual": visual, **SMALL}
    if visual == "regions":
        base["features"] = {"format": fmt, "path": features["tsv"] if fmt == "butd_tsv" else features["npy"]}
    merged = OmegaConf.merge(OmegaConf.create(base), OmegaConf.create(config))
    return DATASETS.get(name)(merged, name)


@pytest.fixture
def fixtures():
    return native
