"""Plugin tests use a private VLFW_CACHE (never ~/.cache/vlfw); the Shapes tiny world is built once."""

import pytest
import torch
from fiber_helpers import make_model

from vlfw.testing import shapes_root, use_private_cache

use_private_cache("vlfw-fiber-test-cache-")
torch.set_num_threads(1)


@pytest.fixture
def model():
    return make_model()


@pytest.fixture(scope="session")
def shapes_tiny_root() -> str:
    return shapes_root("tiny")
