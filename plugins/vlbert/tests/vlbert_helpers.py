"""Shared helpers of the VL-BERT plugin tests."""

from vlfw.testing import shapes_builder  # noqa: F401  (re-exported for the tests)


def build_model(task_infos, **overrides):
    from omegaconf import OmegaConf

    from vlfw.registry import MODELS

    cls = MODELS.get("vlbert")
    tiny = {"size": "tiny", "hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64,
            "vocab_size": 200, "geometry_size": 64, "region_feature_size": 12}
    config = OmegaConf.merge(OmegaConf.create(cls.DEFAULT_CONFIG), tiny, overrides)
    return cls(config, task_infos)
