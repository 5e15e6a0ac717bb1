"""Every recipe of projects/fiber/configs (and projects/multitask/fiber_shapes.yaml) runs 2 updates through
vlfw's runner: the Shapes recipes on the tiny Shapes world (the fine-tuning ones from the pre-training
recipe's checkpoint), the real-data recipes (model shrunk to `tiny`, 32 px, fp32) on the hand-written
native-format fixtures of tests/fixtures/native.py in place of the benchmarks. Retrieval runs with the
ITM re-rank on; captioning generates with beam search."""

import math
import sys
from pathlib import Path

import pytest
import torch

from vlfw.config import load_config
from vlfw.runner import run

ROOT = Path(__file__).resolve().parents[3]
CONFIGS = ROOT / "projects" / "fiber" / "configs"
MULTITASK = ROOT / "projects" / "multitask" / "fiber_shapes.yaml"
sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
import native  # noqa: E402  (tests/fixtures/native.py)

FAST = ["training.max_updates=2", "training.batch_size=4", "training.eval_every=2", "training.checkpoint_every=2",
        "training.log_every=1", "training.progress_bar=false", "evaluation.batch_size=8",
        "evaluation.write_predictions=false", "model_config.fiber.retrieval.rerank_k=2", "logging.tensorboard=false"]
GENERATION = {"max_length": 5, "num_beams": 2}  # captioning evaluation kept short
SHAPES = ["captioning/shapes.yaml", "nlvr2/shapes.yaml", "retrieval/shapes.yaml", "vqa/shapes.yaml"]
REAL = ["captioning/coco_captioning.yaml", "nlvr2/nlvr2.yaml", "retrieval/coco_retrieval.yaml", "vqa/vqa2.yaml"]
REAL_MODEL = ["model_config.fiber.size=tiny", "model_config.fiber.drop_path_rate=0.0", "training.precision=fp32",
              "training.batch_size=2"]  # the fixtures hold 2-3 training samples per benchmark


def datasets_of(path):
    return list(load_config([f"config={path}"]).datasets)


def per_dataset(path, **settings):
    out = []
    for name in datasets_of(path):
        for key, value in settings.items():
            if key == "generation" and name != "coco_captioning":
                continue
            if isinstance(value, dict):
                out += [f"dataset_config.{name}.{key}.{k}={v}" for k, v in value.items()]
            else:
                out.append(f"dataset_config.{name}.{key}={value}")
    return out


def run_recipe(path, *overrides):
    config = load_config([f"config={path}", *FAST, *per_dataset(path, generation=GENERATION), *overrides])
    return config, run(config)


def check(config, metrics):
    for name in config.datasets:
        values = {k.split("/")[-1]: v for k, v in metrics.items() if k.startswith(f"val/{name}/")}
        assert values, (name, sorted(metrics))
        assert all(math.isfinite(v) for v in values.values()), values
        if name == "coco_retrieval":
            assert values["rerank_k"] == 2.0  # the ITM re-ranked recall
        if name == "coco_captioning":
            assert {"bleu4", "cider"} <= set(values)


def test_every_recipe_is_covered():
    recipes = sorted(str(p.relative_to(CONFIGS)) for p in CONFIGS.glob("*/*.yaml"))
    # the fine-grained recipes (rec/, grounding/) run in test_fiber_grounding_task.py
    fine = ["rec/shapes.yaml", "rec/refcoco_plus.yaml", "grounding/shapes.yaml", "grounding/flickr30k_entities.yaml"]
    assert recipes == sorted(SHAPES + REAL + fine + ["pretraining/shapes.yaml", "pretraining/cc3m.yaml"])


def test_shapes_recipes_from_the_shapes_pretraining(tmp_path, shapes_tiny_root):
    pretraining = CONFIGS / "pretraining" / "shapes.yaml"
    run_recipe(pretraining, f"save_dir={tmp_path / 'pretraining'}", *per_dataset(pretraining, **{"shapes.size": "tiny"}))
    weights = tmp_path / "pretraining" / "checkpoints" / "update_2.pt"
    state = torch.load(weights, map_location="cpu", weights_only=True)["model"]
    # two updates of ITC / ITM / MLM moved the gates off 0 (lr x5 for the cross-modal parameters)
    assert any(float(v) != 0.0 for k, v in state.items() if k.endswith("fusion_gate"))
    for recipe in [CONFIGS / r for r in SHAPES] + [MULTITASK]:
        config, metrics = run_recipe(recipe, f"save_dir={tmp_path / recipe.parent.name}", "run_type=train_val",
                                     f"checkpoint.pretrained={weights}", *per_dataset(recipe, **{"shapes.size": "tiny"}))
        check(config, metrics)


@pytest.fixture(scope="module")
def native_roots(tmp_path_factory):
    root = tmp_path_factory.mktemp("native")
    roots = {"VQA2_DIR": root / "vqa2", "NLVR2_DIR": root / "nlvr2", "COCO_DIR": root / "coco", "CC3M_DIR": root / "cc3m"}
    for path in roots.values():
        path.mkdir()
    native.write_vqa2(str(roots["VQA2_DIR"]))
    native.write_nlvr2(str(roots["NLVR2_DIR"]))
    native.write_karpathy(str(roots["COCO_DIR"]), "coco")
    native.write_cc3m(str(roots["CC3M_DIR"]))
    return {k: str(v) for k, v in roots.items()}


def test_real_data_recipes_on_native_fixtures(tmp_path, native_roots, monkeypatch):
    for key, value in native_roots.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("FIBER_SAVE", str(tmp_path))
    pretraining = CONFIGS / "pretraining" / "cc3m.yaml"
    config, _ = run_recipe(pretraining, *REAL_MODEL, *per_dataset(pretraining, **{"processors.image.params.size": 32}))
    monkeypatch.setenv("FIBER_PRETRAINED", f"{config.save_dir}/checkpoints/update_2.pt")
    for recipe in REAL:
        path = CONFIGS / recipe
        extra = ["dataset_config.vqa2.processors.answer.params.min_count=1"] if "vqa2" in datasets_of(path) else []
        config, metrics = run_recipe(path, *REAL_MODEL, "run_type=train_val", *extra,
                                     *per_dataset(path, **{"processors.image.params.size": 32}))
        assert config.checkpoint.pretrained.endswith("update_2.pt")
        check(config, metrics)


def test_vlfw_run_trains_vqa_and_captioning_on_shapes(tmp_path, shapes_tiny_root, capsys):
    """The command line end to end: `vlfw_run config=<recipe> ...` trains 3 updates and evaluates."""
    import json

    from vlfw.cli.run import main

    for recipe, dataset, metric in [("vqa/shapes.yaml", "vqa2", "vqa_accuracy"),
                                    ("captioning/shapes.yaml", "coco_captioning", "cider")]:
        path = CONFIGS / recipe
        args = [f"config={path}", *FAST, "training.max_updates=3", "training.eval_every=3", "training.checkpoint_every=3",
                f"dataset_config.{dataset}.shapes.size=tiny", f"save_dir={tmp_path / dataset}", "run_type=train_val",
                *per_dataset(path, generation=GENERATION)]
        assert main(args) == 0
        printed = capsys.readouterr().out
        metrics = json.loads(printed[printed.index("{"):])
        assert math.isfinite(metrics[f"val/{dataset}/{metric}"])
        assert (tmp_path / dataset / "checkpoints" / "update_3.pt").is_file()
