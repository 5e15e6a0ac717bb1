import pytest

from vlfw.world import ensure_world


@pytest.fixture(scope="session")
def world_cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("vlfw_cache"))


@pytest.fixture(scope="session")
def world(world_cache) -> str:
    """One tiny world shared by the whole session."""
    return ensure_world("tiny", seed=0, cache_dir=world_cache)
