"""The recipes of projects/cmal/configs through vlfw's runner on the tiny Shapes world: pre-training
(gamma as task proportions) for a few updates, then each fine-tuning recipe from its checkpoint,
and the multi-task recipe; every real-data recipe at least loads (its paths are placeholders)."""

import json
import math
from pathlib import Path

import pytest
import torch

from vlfw.config import load_config
from vlfw.registry import MODELS
from vlfw.runner import run
from vlfw.runner.checkpoint import load_pretrained

ROOT = Path(__file__).resolve().parents[3]
CONFIGS = ROOT / "projects" / "cmal" / "configs"
MULTITASK = ROOT / "projects" / "multitask" / "cmal_shapes.yaml"
FAST = ["training.batch_size=4", "training.log_every=1", "training.progress_bar=false", "evaluation.batch_size=16",
        "evaluation.write_predictions=false", "logging.tensorboard=false"]
FINETUNE = {"vqa": "vqa2", "nlvr2": "nlvr2", "snli_ve": "snli_ve", "refcoco_plus": "refcoco_plus"}
SHAPES_FINETUNE = {**{f"{task}/shapes.yaml": dataset for task, dataset in FINETUNE.items()},
                   "vqa/shapes_answer_decoder.yaml": "vqa2"}


def tiny(path, *extra):
    """The recipe's datasets on the tiny Shapes world (the recipes train on `default`)."""
    datasets = load_config([f"config={path}", *extra]).datasets
    return [f"dataset_config.{name}.shapes.size=tiny" for name in datasets]


def train_log(save_dir):
    lines = (Path(save_dir) / "train_log.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if '"train/total_loss"' in line]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, shapes_tiny_root):
    save = tmp_path_factory.mktemp("pretrain")
    recipe = CONFIGS / "pretrain" / "shapes.yaml"
    overrides = [*FAST, "training.max_updates=4", "training.checkpoint_every=4", f"save_dir={save}"]
    run(load_config([f"config={recipe}", *overrides, *tiny(recipe)]))
    return save


def test_pretraining_recipe_samples_the_objectives_and_saves_a_checkpoint(pretrained):
    logged = train_log(pretrained)
    assert len(logged) == 4
    for entry in logged:
        trained = {k.split("/")[1] for k in entry if k.startswith("train/cmal_")}
        assert len(trained) == 1  # one objective's dataset per update (fixed_ratio over gamma)
        assert math.isfinite(entry["train/total_loss"])
    assert (pretrained / "checkpoints" / "update_4.pt").is_file()


def test_a_pretraining_checkpoint_initialises_all_but_the_head(pretrained, shapes_tiny_root):
    from vlfw.testing import shapes_builder

    builder = shapes_builder("vqa2", visual="regions", features={"format": "npy"})
    model = MODELS.get("cmal")({"size": "tiny"}, {"vqa2": builder.task_info()})
    report = load_pretrained(model, pretrained / "checkpoints" / "update_4.pt")
    assert not report["mismatched"]
    assert all(k.startswith(("heads.", "region_norm.")) for k in report["missing"]), report["missing"]
    saved = torch.load(pretrained / "checkpoints" / "update_4.pt", map_location="cpu", weights_only=True)["model"]
    assert torch.equal(model.cmai.layers[1].qkv.weight, saved["cmai.layers.1.qkv.weight"])


@pytest.mark.parametrize("name", sorted(SHAPES_FINETUNE))
def test_finetuning_recipe_runs_from_the_pretraining_checkpoint(pretrained, tmp_path, name):
    recipe = CONFIGS / name
    dataset = SHAPES_FINETUNE[name]
    overrides = [*FAST, "training.max_updates=2", "training.eval_every=2", "training.checkpoint_every=2",
                 "run_type=train_val", f"save_dir={tmp_path}", f"checkpoint.pretrained={pretrained}/checkpoints/update_4.pt"]
    metrics = run(load_config([f"config={recipe}", *overrides, *tiny(recipe)]))
    values = {k: v for k, v in metrics.items() if k.startswith(f"val/{dataset}/")}
    assert values and all(math.isfinite(v) for v in values.values()), metrics


def test_multitask_recipe_runs(tmp_path, shapes_tiny_root):
    overrides = [*FAST, "training.max_updates=3", "training.eval_every=3", "training.checkpoint_every=3",
                 "run_type=train_val", f"save_dir={tmp_path}"]
    metrics = run(load_config([f"config={MULTITASK}", *overrides, *tiny(MULTITASK)]))
    for dataset in ("vqa2", "nlvr2", "snli_ve", "refcoco_plus"):
        assert any(k.startswith(f"val/{dataset}/") for k in metrics), sorted(metrics)


@pytest.mark.parametrize("recipe", ["pretrain/shapes_loss_weights.yaml", "pretrain/coco.yaml", "vqa/real.yaml",
                                    "nlvr2/real.yaml", "snli_ve/real.yaml", "refcoco_plus/real.yaml"])
def test_other_recipes_load(recipe):
    config = load_config([f"config={CONFIGS / recipe}"])
    assert config.model == "cmal"
    if "loss_weights" in recipe:
        assert dict(config.dataset_config.cmal_pretraining.loss_weights) == {
            "amc_word": 0.4, "amc_region": 0.4, "mlm": 0.2, "mrm": 0.2, "itm": 0.1, "vtc": 0.1}


@pytest.mark.parametrize("task", sorted(FINETUNE))
def test_real_data_finetuning_recipe_runs_on_shapes_in_place_of_the_benchmark(tmp_path, task, shapes_tiny_root):
    """The real recipe with only its data swapped (source=shapes), the size shrunk and fp32."""
    dataset = FINETUNE[task]
    overrides = [*FAST, "training.max_updates=2", "training.max_epochs=null", "training.eval_every=2",
                 "training.checkpoint_every=2", "run_type=train_val", f"save_dir={tmp_path}", "model_config.cmal.size=tiny",
                 "training.precision=fp32", "checkpoint.pretrained=null", f"dataset_config.{dataset}.source=shapes",
                 f"dataset_config.{dataset}.shapes.size=tiny"]
    metrics = run(load_config([f"config={CONFIGS / task / 'real.yaml'}", *overrides]))
    assert any(k.startswith(f"val/{dataset}/") for k in metrics), sorted(metrics)


def test_loss_weights_recipe_weights_every_objective_by_gamma(tmp_path, shapes_tiny_root):
    recipe = CONFIGS / "pretrain" / "shapes_loss_weights.yaml"
    overrides = [*FAST, "training.max_updates=2", "training.checkpoint_every=2", f"save_dir={tmp_path}"]
    run(load_config([f"config={recipe}", *overrides, *tiny(recipe)]))
    gamma = {"amc_word": 0.4, "amc_region": 0.4, "mlm": 0.2, "mrm": 0.2, "itm": 0.1, "vtc": 0.1}
    for entry in train_log(tmp_path):
        terms = {k.split("/")[-1]: v for k, v in entry.items() if k.startswith("train/cmal_pretraining/")}
        assert set(terms) == {*gamma, "total_loss"}
        assert math.isclose(terms["total_loss"], sum(gamma[k] * terms[k] for k in gamma), rel_tol=1e-4)
