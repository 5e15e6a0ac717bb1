"""Where vlfw keeps what it generates or derives (Shapes worlds, answer vocabularies)."""

from __future__ import annotations

import os


def cache_dir() -> str:
    """$VLFW_CACHE, or ~/.cache/vlfw."""
    return os.path.expanduser(os.environ.get("VLFW_CACHE") or os.path.join("~", ".cache", "vlfw"))
