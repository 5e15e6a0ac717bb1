"""Plugin tests use a private VLFW_CACHE (never ~/.cache/vlfw) and build Shapes tiny data once."""

import pytest

from vlfw.testing import shapes_root, use_private_cache

use_private_cache("vlfw-vlbert-test-cache-")


@pytest.fixture(scope="session")
def shapes_tiny_root() -> str:
    return shapes_root("tiny")
