"""Plugin tests use a private VLFW_CACHE; vlfw_cmal is imported from this checkout when the
plugin is not installed (requirements.txt installs it: pip install -e plugins/cmal)."""

import importlib.util
import os
import sys

import pytest

from vlfw.testing import shapes_root, use_private_cache

use_private_cache("vlfw-cmal-test-cache-")

if importlib.util.find_spec("vlfw_cmal") is None:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="session")
def shapes_tiny_root() -> str:
    return shapes_root("tiny")
