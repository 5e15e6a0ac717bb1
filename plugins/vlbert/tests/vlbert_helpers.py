"""Shared helpers of the VL-BERT plugin tests."""

from vlfw.tasks import TaskInfo
from vlfw.testing import shapes_builder, task_info  # noqa: F401  (re-exported for the tests)


def build_model(task_infos, **overrides):
    """A tiny VL-BERT for `task_infos` (TaskInfos, or dicts of TaskInfo fields keyed by dataset)."""
    from omegaconf import OmegaConf

    from vlfw.registry import MODELS

    task_infos = {name: info if isinstance(info, TaskInfo) else task_info(dataset=name, **info)
                  for name, info in task_infos.items()}
    cls = MODELS.get("vlbert")
    tiny = {"size": "tiny", "hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64,
            "vocab_size": 200, "geometry_size": 64, "region_feature_size": 12}
    config = OmegaConf.merge(OmegaConf.create(cls.DEFAULT_CONFIG), tiny, overrides)
    return cls(config, task_infos)
