import pytest
import torch

from vlfw.errors import RegistryError
from vlfw.models.base import BaseModel
from vlfw.registry import LOSSES, MODELS, Registry


def test_register_and_build_records_origin():
    @MODELS.register("tmp_registry_model")
    class TmpModel(BaseModel):
        pass

    try:
        entry = MODELS.entry("tmp_registry_model")
        assert entry.obj is TmpModel
        assert entry.origin.module == __name__
        assert entry.origin.distribution is None  # registered outside any plugin
        assert "tmp_registry_model" in MODELS.names()
    finally:
        MODELS.remove("tmp_registry_model")


def test_core_components_come_from_the_vlfw_distribution():
    origin = MODELS.origin("late_fusion")
    assert origin.distribution == "vlfw"
    assert origin.entry_point == "vlfw"
    assert origin.version


def test_duplicate_name_names_both_origins():
    with pytest.raises(RegistryError) as info:
        @MODELS.register("late_fusion")
        class Other(BaseModel):
            pass

    message = str(info.value)
    assert "vlfw.models.baselines" in message and __name__ in message


def test_unknown_name_lists_known_and_close_matches():
    with pytest.raises(RegistryError) as info:
        MODELS.get("late_fushion")
    message = str(info.value)
    assert "Did you mean: late_fusion" in message
    assert "text_only" in message


def test_base_class_is_checked():
    with pytest.raises(RegistryError, match="not a subclass"):
        @LOSSES.register("not_a_loss")
        class NotALoss(torch.nn.Module):
            pass
    assert "not_a_loss" not in LOSSES.names()


def test_untyped_registry_accepts_callables_and_builds():
    registry = Registry("thing")
    registry.add("double", lambda x: 2 * x)
    assert registry.build("double", 4) == 8
