"""Every recipe in projects/vlmo/configs runs 2 updates through vlfw's runner: the Shapes recipes
on the tiny Shapes world, the real-data recipes (model shrunk to `tiny`, 32 px, fp32) on the
hand-written native-format fixtures of tests/fixtures/native.py in place of the benchmarks.
Pre-training stages chain through their checkpoints as the recipes say; retrieval recipes run
with the ITM re-rank on."""

import math
import os
import sys
from pathlib import Path

import pytest
import torch

from vlfw.config import load_config
from vlfw.runner import run

ROOT = Path(__file__).resolve().parents[3]
CONFIGS = ROOT / "projects" / "vlmo" / "configs"
sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
import native  # noqa: E402  (tests/fixtures/native.py)

FAST = ["training.max_updates=2", "training.batch_size=4", "training.eval_every=2", "training.checkpoint_every=2",
        "training.log_every=1", "training.progress_bar=false", "evaluation.batch_size=4",
        "evaluation.write_predictions=false"]
REAL = ["model_config.vlmo.size=tiny", "model_config.vlmo.drop_path_rate=0.0", "training.precision=fp32",
        "training.batch_size=2"]  # the fixtures hold 2-3 training samples per benchmark
RETRIEVAL = {"coco_retrieval", "flickr30k_retrieval"}


def all_recipes():
    return sorted(str(p.relative_to(CONFIGS)) for p in CONFIGS.glob("*/*.yaml"))


def run_recipe(recipe, *overrides):
    config = load_config([f"config={CONFIGS / recipe}", *FAST, *overrides])
    return config, run(config)


def tiny_world(recipe):
    """The Shapes recipes train on the `default` world; the tests use the tiny one."""
    datasets = load_config([f"config={CONFIGS / recipe}"]).datasets
    return [f"dataset_config.{name}.shapes.size=tiny" for name in datasets]


def checkpoint(save_dir):
    path = Path(save_dir) / "checkpoints" / "update_2.pt"
    assert path.is_file(), path
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def check_finetune(config, metrics):
    for name in config.datasets:
        values = {k.split("/")[-1]: v for k, v in metrics.items() if k.startswith(f"val/{name}/")}
        assert values, (name, sorted(metrics))
        assert all(math.isfinite(v) for v in values.values()), values
        if name in RETRIEVAL:
            assert values["rerank_k"] == 2.0  # the re-ranked recall, not the dual encoder's
            assert all(0.0 <= values[k] <= 100.0 for k in ("ir_r1", "ir_r5", "tr_r1", "tr_r5"))


def expert(state, layer, name):
    return state[f"transformer.blocks.{layer}.experts.{name}.fc1.weight"]


def check_pretraining_chain(run_stage):
    """Stage 1 -> 2 -> 3 as the recipes chain them; what a stage freezes arrives unchanged."""
    first = run_stage(1, [])
    second = run_stage(2, [first])
    third = run_stage(3, [second])
    a, b, c = (checkpoint(d) for d in (first, second, third))
    assert torch.equal(expert(a, 0, "vision"), expert(b, 0, "vision"))  # the language stage freezes the V-FFN
    assert not torch.equal(expert(a, 0, "language"), expert(b, 0, "language"))  # ... and trains the L-FFN
    assert not torch.equal(expert(b, 3, "vision_language"), expert(c, 3, "vision_language"))
    return third


@pytest.fixture(scope="module")
def native_roots(tmp_path_factory):
    root = tmp_path_factory.mktemp("native")
    roots = {"VQA2_DIR": root / "vqa2", "NLVR2_DIR": root / "nlvr2", "COCO_DIR": root / "coco",
             "FLICKR30K_DIR": root / "flickr30k", "CC3M_DIR": root / "cc3m"}
    for path in roots.values():
        path.mkdir()
    native.write_vqa2(str(roots["VQA2_DIR"]))
    native.write_nlvr2(str(roots["NLVR2_DIR"]))
    native.write_karpathy(str(roots["COCO_DIR"]), "coco")
    native.write_karpathy(str(roots["FLICKR30K_DIR"]), "flickr30k")
    native.write_cc3m(str(roots["CC3M_DIR"]))
    return {k: str(v) for k, v in roots.items()}


SHAPES_FINETUNE = ["coco_retrieval/shapes.yaml", "flickr30k_retrieval/shapes.yaml", "multitask/shapes.yaml",
                   "nlvr2/shapes.yaml", "vqa2/shapes.yaml"]
REAL_FINETUNE = ["coco_retrieval/coco_retrieval.yaml", "flickr30k_retrieval/flickr30k_retrieval.yaml",
                 "multitask/multitask.yaml", "nlvr2/nlvr2.yaml", "vqa2/vqa2.yaml"]
PRETRAINING = [f"pretraining/{world}_stage{n}.yaml" for world in ("shapes", "cc3m")
               for n in ("1_vision", "2_language", "3_vision_language")]


def test_every_recipe_is_covered():
    assert sorted(SHAPES_FINETUNE + REAL_FINETUNE + PRETRAINING) == [r for r in all_recipes() if "model" not in r]


def test_shapes_recipes(tmp_path, shapes_tiny_root):
    def stage(n, previous):
        recipe = PRETRAINING[n - 1]
        pretrained = [f"checkpoint.pretrained={previous[0]}/checkpoints/update_2.pt"] if previous else []
        save_dir = tmp_path / f"stage{n}"
        run_recipe(recipe, f"save_dir={save_dir}", *tiny_world(recipe), *pretrained)
        return save_dir

    third = check_pretraining_chain(stage)
    for recipe in SHAPES_FINETUNE:
        config, metrics = run_recipe(recipe, f"save_dir={tmp_path / recipe.split('/')[0]}", "run_type=train_val",
                                     *tiny_world(recipe),
                                     f"checkpoint.pretrained={third}/checkpoints/update_2.pt",
                                     "model_config.vlmo.retrieval.rerank_k=2")
        check_finetune(config, metrics)


def test_real_data_recipes_on_native_fixtures(tmp_path, native_roots, monkeypatch):
    for key, value in native_roots.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("VLMO_SAVE", str(tmp_path))
    image_size = [f"dataset_config.{d}.processors.image.params.size=32" for d in ("vqa2", "nlvr2", "coco_retrieval",
                                                                         "flickr30k_retrieval", "cc3m")]

    def stage(n, previous):
        recipe = PRETRAINING[3 + n - 1]
        # the recipes chain through update_200000.pt; these runs stop at update 2
        pretrained = [f"checkpoint.pretrained={previous[0]}/checkpoints/update_2.pt"] if previous else []
        config, _ = run_recipe(recipe, *REAL, "dataset_config.cc3m.processors.image.params.size=32", *pretrained)
        assert str(config.checkpoint.pretrained or "").endswith("update_2.pt") == bool(previous)
        return config.save_dir

    third = check_pretraining_chain(lambda n, previous: stage(n, [previous[0]] if previous else []))
    monkeypatch.setenv("VLMO_PRETRAINED", f"{third}/checkpoints/update_2.pt")
    for recipe in REAL_FINETUNE:
        datasets = load_config([f"config={CONFIGS / recipe}"]).datasets
        sizes = [s for s in image_size if s.split(".")[1] in datasets]
        if "vqa2" in datasets:  # 3 training questions: keep every answer in the vocabulary
            sizes.append("dataset_config.vqa2.processors.answer.params.min_count=1")
        config, metrics = run_recipe(recipe, *REAL, *sizes, "run_type=train_val",
                                     "model_config.vlmo.retrieval.rerank_k=2")
        assert config.checkpoint.pretrained == os.environ["VLMO_PRETRAINED"]
        check_finetune(config, metrics)
