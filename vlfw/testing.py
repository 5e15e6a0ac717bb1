"""Helpers for test suites, the core's and plugins' alike."""

from __future__ import annotations

import os
import tempfile
from typing import Any


def use_private_cache(prefix: str = "vlfw-test-cache-") -> str:
    """Point VLFW_CACHE at a fresh temporary directory (unless already set), so tests never read
    or write ~/.cache/vlfw, and keep Hugging Face libraries offline. Returns the cache dir."""
    os.environ.setdefault("VLFW_CACHE", tempfile.mkdtemp(prefix=prefix))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    return os.environ["VLFW_CACHE"]


def shapes_root(size: str = "tiny", seed: int = 0) -> str:
    """The Shapes world of `size`, generated into the cache on first use."""
    from vlfw.world import ensure_world

    return ensure_world(size, seed=seed)


def shapes_builder(name: str, size: str = "tiny", seed: int = 0, **overrides: Any):
    """The dataset builder `name` reading the Shapes world, with its defaults plus `overrides`."""
    from omegaconf import OmegaConf

    from vlfw.config.loader import component_defaults
    from vlfw.registry import DATASETS

    builder_class = DATASETS.get(name)
    config = OmegaConf.merge(component_defaults(builder_class),
                             {"source": "shapes", "shapes": {"size": size, "seed": seed}}, overrides)
    return builder_class(config, name)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for a test's process group)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
