"""Plugin tests use a private VLFW_CACHE (never ~/.cache/vlfw) and build Shapes tiny data once."""

import os
import tempfile

import pytest

_CACHE = tempfile.mkdtemp(prefix="vlfw-vlbert-test-cache-")
os.environ.setdefault("VLFW_CACHE", _CACHE)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def shapes_tiny_root() -> str:
    from vlfw.world import ensure_world

    return ensure_world("tiny", seed=0)


def shapes_builder(name: str, **overrides):
    from omegaconf import OmegaConf

    from vlfw.registry import DATASETS

    cls = DATASETS.get(name)
    config = OmegaConf.merge(OmegaConf.create(cls.DEFAULT_CONFIG),
                             {"source": "shapes", "shapes": {"size": "tiny", "seed": 0}, **overrides})
    return cls(config, name)


def build_model(task_infos, **overrides):
    from omegaconf import OmegaConf

    from vlfw.registry import MODELS

    cls = MODELS.get("vlbert")
    tiny = {"size": "tiny", "hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64,
            "vocab_size": 200, "geometry_size": 64, "region_feature_size": 12}
    config = OmegaConf.merge(OmegaConf.create(cls.DEFAULT_CONFIG), tiny, overrides)
    return cls(config, task_infos)
