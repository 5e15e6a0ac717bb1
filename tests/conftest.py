"""Suite-wide settings: a private cache directory, so tests never read or write ~/.cache/vlfw."""

import os
import tempfile

import pytest

_CACHE = tempfile.mkdtemp(prefix="vlfw-test-cache-")
os.environ.setdefault("VLFW_CACHE", _CACHE)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def shapes_tiny_root() -> str:
    """The tiny Shapes world, generated once per test session into the private cache."""
    from vlfw.world import ensure_world

    return ensure_world("tiny", seed=0)
