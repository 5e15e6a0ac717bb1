"""Model cards: parameter counts of models built on the meta device, `vlfw_list models --details`."""

import json

import torch
from torch import nn

from vlfw.cli.list import main
from vlfw.models.base import BaseModel, provides
from vlfw.models.cards import (
    build_for_card,
    format_card,
    load_measurements,
    model_card,
    model_sizes,
    parameter_counts,
    reference_task_infos,
)
from vlfw.registry import MODELS


def test_meta_counts_equal_a_real_model():
    model_class = MODELS.get("late_fusion")
    meta = build_for_card(model_class, "default", "images")
    assert all(p.is_meta for p in meta.parameters())  # nothing allocated
    real = model_class({}, reference_task_infos(model_class, "images"))
    total, parts, heads = parameter_counts(meta)
    assert total == sum(p.numel() for p in real.parameters())
    assert parts == {name: sum(p.numel() for p in child.parameters()) for name, child in real.named_children()
                     if any(True for _ in child.parameters())}
    assert sum(parts.values()) == total
    # one head per supported task
    assert set(heads) == {f"shapes_{t}" for t in model_class.supported_tasks()}
    assert heads["shapes_vqa"] == sum(p.numel() for p in real.heads.heads["shapes_vqa"].parameters())


class _Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.out = nn.Linear(4, 10)
        self.out.weight = self.embed.weight  # tied: counted once, in the first submodule


def test_tied_parameters_count_once():
    assert parameter_counts(_Tied()) == (10 * 4 + 10, {"embed": 40, "out": 10}, {})


class _NeedsValues(BaseModel):
    """A constructor that reads a small tensor's values (which the meta device cannot give)."""

    VISUAL_INPUTS = ("images",)

    def __init__(self, config, task_infos):
        super().__init__(config, task_infos)
        self.rates = torch.linspace(0, 0.1, 3).tolist()
        self.big = nn.Linear(100, 100)

    @provides("vqa", features=("pooled",))
    def pooled(self, batch):
        return {}


def test_large_tensors_go_to_meta_when_a_constructor_needs_values():
    model = build_for_card(_NeedsValues, "default", "images")
    assert model.big.weight.is_meta and model.rates == [0.0, 0.05000000074505806, 0.10000000149011612]
    assert parameter_counts(model)[0] == 100 * 100 + 100


def test_sizes_come_from_config_choices():
    assert model_sizes(MODELS.get("late_fusion")) == ["default"]

    class Sized(BaseModel):
        CONFIG_CHOICES = {"size": ("tiny", "base")}

    assert model_sizes(Sized) == ["tiny", "base"]


def test_every_registered_model_gets_a_card(capsys):
    assert main(["models", "--details"]) == 0
    out = capsys.readouterr().out
    for entry in MODELS.entries():
        assert f"\n{entry.name}  (" in out
        model_class = entry.obj
        first_party = model_class.__module__.split(".")[0] in ("vlfw", "vlfw_vlbert", "vlfw_vlmo", "vlfw_fiber", "vlfw_cmal")
        # toy models other tests register (runner_toys, ...) need not declare it; ours must
        assert model_class.VISUAL_INPUTS is not None or not first_party, f"{entry.name} declares no VISUAL_INPUTS"
        for size in model_sizes(model_class):
            assert f"  size {size}: " in out
        if first_party:  # our models can all be built for counting (toy test models may not)
            section = out.split(f"\n{entry.name}  (", 1)[1].split("\n\n", 1)[0]
            assert "cannot build it" not in section, entry.name


def test_plain_listing_is_unchanged(capsys):
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"models ({len(list(MODELS.entries()))}):"
    assert all(line.startswith("  ") and "parameters" not in line for line in lines[1:]
               if not line.startswith("plugins"))
    assert main(["datasets", "--details"]) == 2


def test_measurements_are_shown_or_not_measured(tmp_path):
    path = tmp_path / "cards.json"
    figures = {"batch_1_mb": 30.0, "batch_8_mb": 44.0, "per_sample_mb": 2.0}
    path.write_text(json.dumps({"models": {"text_only/default": {
        "device": "cpu (x86_64)", "threads": 1, "task": "vqa", "visual": None,
        "training": figures, "inference": {"batch_1_mb": 5.0, "batch_8_mb": 5.7, "per_sample_mb": 0.1}}}}))
    measured = load_measurements(path)
    text = format_card(model_card("text_only", measured))
    assert "visual input: none (text only)" in text
    assert "training  batch 1 30.0 MiB, batch 8 44.0 MiB, per sample 2.0 MiB" in text
    assert "inference batch 1 5.0 MiB, batch 8 5.7 MiB, per sample 0.1 MiB" in text
    assert "cpu (x86_64), 1 thread(s), task vqa on text only" in text
    assert "not measured" in format_card(model_card("late_fusion", {}))
    assert load_measurements(tmp_path / "absent.json") == {}
