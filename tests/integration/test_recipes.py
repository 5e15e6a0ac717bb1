"""The multi-task recipes, the baselines' recipes and the quickstart run end to end: 2 updates of
every dataset they name, on the tiny Shapes world, then validation and the result table."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from vlfw.config import load_config
from vlfw.runner import run

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted(str(p.relative_to(ROOT)) for p in [*(ROOT / "projects" / "multitask").glob("*.yaml"),
                                                     *(ROOT / "projects" / "baselines").glob("*.yaml"),
                                                     ROOT / "projects" / "quickstart.yaml"])


def test_every_multitask_recipe_is_listed():
    assert {"projects/multitask/vlbert_shapes.yaml", "projects/multitask/vlmo_shapes.yaml",
            "projects/quickstart.yaml"} <= set(RECIPES)


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_runs_two_updates_per_dataset(recipe, tmp_path, shapes_tiny_root):
    config = load_config([f"config={ROOT / recipe}"])
    datasets = list(config.datasets)
    overrides = [f"dataset_config.{name}.shapes.size=tiny" for name in datasets]
    config = load_config([f"config={ROOT / recipe}", *overrides, f"save_dir={tmp_path}", "run_type=train_val",
                          f"training.max_updates={2 * len(datasets)}", "multitask.iteration_strategy=round_robin",
                          "training.batch_size=4", "evaluation.batch_size=8", "training.progress_bar=false",
                          "training.eval_every=0", "training.checkpoint_every=0", "logging.tensorboard=false"])
    metrics = run(config)
    for name in datasets:
        assert any(key.startswith(f"val/{name}/") for key in metrics), (name, sorted(metrics))
    table = (tmp_path / "results.md").read_text()
    assert all(f"| {name} | val |" in table for name in datasets)
    assert OmegaConf.load(tmp_path / "config.yaml").datasets == datasets
