"""The fine-grained stage wired into FIBER: the dense_rec / dense_grounding tasks (head fiber_grounding,
loss fiber_grounding, metrics on PREDICTED boxes), the plugin datasets, the REC / grounding recipes."""

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from fiber_helpers import make_batch

from vlfw.errors import ConfigError
from vlfw.registry import DATASETS, LOSSES, METRICS
from vlfw.runner.distributed import DistributedContext
from vlfw.runner.evaluation import Evaluator
from vlfw.testing import task_info
from vlfw_fiber.dense import FIBERGroundingLoss
from vlfw_fiber.grounding import rec_targets
from vlfw_fiber.model import FIBER

ROOT = Path(__file__).resolve().parents[3]
CONFIGS = ROOT / "projects" / "fiber" / "configs"
sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
import native  # noqa: E402  (tests/fixtures/native.py)

SMALL_HEAD = {"stages": [0, 1, 2], "width": 16, "num_convs": 1, "p6p7": False}
REC = {"refs": task_info("dense_rec", "refs", visual="images")}
GROUNDING = {"phrases": task_info("dense_grounding", "phrases", visual="images")}
GT = torch.tensor([[4.0, 4.0, 20.0, 20.0], [30.0, 10.0, 60.0, 40.0], [8.0, 30.0, 40.0, 62.0]])
FAST = ["training.max_updates=3", "training.eval_every=3", "training.checkpoint_every=3", "training.batch_size=4",
        "training.log_every=1", "training.progress_bar=false", "evaluation.batch_size=8",
        "evaluation.write_predictions=false", "logging.tensorboard=false"]


def make_dense_model(infos, **grounding):
    torch.manual_seed(0)
    return FIBER({"size": "tiny", "drop_path_rate": 0.0, "dropout": 0.0, "grounding": {**SMALL_HEAD, **grounding}}, infos)


def terms(outputs):
    return {k: v for k, v in outputs.items() if k.startswith("grounding/")}


@pytest.mark.parametrize("stages", [[0, 1, 2], [1, 2, 3]])
def test_rec_forward_loss_backward_reaches_every_trainable_parameter(stages):
    model = make_dense_model(REC, stages=stages).train()
    batch = make_batch("refs", image_size=64, gt_box=GT)
    outputs = model(batch)
    parts = terms(outputs)
    assert set(parts) == {"grounding/token_focal", "grounding/box_giou", "grounding/centerness"}
    assert all(torch.isfinite(v) and v > 0 for v in parts.values()), parts
    loss = LOSSES.get("fiber_grounding")()(batch, outputs)
    assert torch.allclose(loss, sum(parts.values()))
    loss.backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    # DDP without find_unused_parameters: every trainable parameter gets a gradient
    assert [n for n, p in trainable.items() if p.grad is None] == []
    assert any(n.startswith("heads.heads.refs.grounding.head.") for n in trainable)
    # the gates start at 0, so their gradient is what opens them: non-zero, except (stages 0-2) block 4's,
    # whose output reaches the loss only through the top text layer's cross-attention, gated by 0 at init
    zero = sorted(n for n, p in trainable.items() if n.endswith("fusion_gate") and float(p.grad.abs()) == 0)
    assert zero == ([] if stages[-1] == 3 else ["encoder.image.stages.3.0.fusion_gate"])
    frozen = set(model.frozen_families)
    assert {"itc", "itm_head", "mlm_head", "fused_poolers", "image_final_norm"} <= frozen
    assert ("image_block_5" in frozen) == (stages[-1] < 3)  # the top block feeds only the unread stage-3 map


def test_rec_targets_of_the_head_match_the_grounding_package():
    model = make_dense_model(REC).train()
    batch = make_batch("refs", image_size=64, gt_box=GT)
    head = model.heads.heads["refs"]
    mine = head.targets(batch, head.phrase_masks(batch, model.text_mask(batch.input_ids, batch.attention_mask)))
    theirs = rec_targets(batch, task_info("dense_rec").text.special_ids)
    for a, b in zip(mine, theirs):
        assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["positive_map"], b["positive_map"])


def test_rec_evaluation_predicts_boxes_inside_the_image():
    model = make_dense_model(REC, predict_k=3).eval()
    batch = make_batch("refs", image_size=64, gt_box=GT)
    with torch.inference_mode():
        outputs = model(batch)
    assert terms(outputs) == {}
    boxes = outputs["pred_boxes"]
    assert boxes.shape == (3, 3, 4) and outputs["pred_valid"][:, 0].all()
    assert bool((boxes >= 0).all() and (boxes <= 64).all())
    assert bool((outputs["pred_scores"][:, :-1] >= outputs["pred_scores"][:, 1:]).all())  # best first
    # the same boxes as the grounding package's predict on the same dense outputs, phrase = the expression
    head = model.heads.heads["refs"]
    phrases = head.phrase_masks(batch, outputs["text_mask"])
    again = head.grounding.predict(outputs, [p[None] for p in phrases], [[64, 64]] * 3, 3)
    assert torch.equal(torch.cat([r["boxes"] for r in again]), boxes)


def test_loss_weights_and_errors():
    outputs = {"grounding/token_focal": torch.tensor(1.0), "grounding/box_giou": torch.tensor(2.0),
               "grounding/centerness": torch.tensor(4.0)}
    assert float(FIBERGroundingLoss(weights={"box_giou": 0.5})(None, outputs)) == pytest.approx(6.0)
    with pytest.raises(ConfigError, match="grounding/<term>"):
        FIBERGroundingLoss()(None, {"logits": torch.zeros(1)})
    with pytest.raises(ConfigError, match="unknown weights"):
        FIBERGroundingLoss(weights={"giou": 1.0})
    with pytest.raises(ConfigError, match="widht"):
        make_dense_model(REC, widht=8)
    with pytest.raises(ConfigError, match="unknown setting"):  # a per-dataset override of the head
        FIBER({"size": "tiny", "heads": {"refs": {"type": "fiber_grounding", "params": {"grounding": {"widht": 8}}}}}, REC)
    with pytest.raises(ConfigError, match="stages"):
        make_dense_model(REC, stages=[2, 1])


def test_dense_grounding_trains_on_the_phrase_and_every_chain_box():
    model = make_dense_model(GROUNDING).train()
    batch = make_batch("phrases", image_size=64, pad_last=False)
    batch.token_type_ids = torch.zeros_like(batch.input_ids)
    batch.token_type_ids[:, 4:] = 1  # [CLS] p p p | [SEP]... sentence
    batch.gt_boxes = torch.stack([GT, torch.cat([GT[:1], torch.zeros(2, 4)]), torch.cat([GT[1:], torch.zeros(1, 4)])])
    head = model.heads.heads["phrases"]
    phrases = head.phrase_masks(batch, model.text_mask(batch.input_ids, batch.attention_mask))
    assert phrases[:, 1:4].all() and not phrases[:, 0].any() and not phrases[:, 4:].any()
    assert [t["boxes"].shape[0] for t in head.targets(batch, phrases)] == [3, 1, 2]
    outputs = model(batch)
    sum(terms(outputs).values()).backward()
    model.eval()
    with torch.inference_mode():
        outputs = model(batch)
    metric = METRICS.get("predicted_box_grounding_recall")(task_info=GROUNDING["phrases"])
    batch.index = torch.arange(3)
    metric.update(batch, outputs)
    assert set(metric.compute()) == {"recall@1", "recall@5", "recall@10"}


class BoxesModel(torch.nn.Module):
    """Predicts the gt box (shifted by `shift` pixels in x) for every sample whose index is even,
    a box far from it for the odd ones."""

    def __init__(self, shift: float = 0.0):
        super().__init__()
        self.shift = shift

    def forward(self, batch):
        gt = batch.gt_box.float()
        far = torch.tensor([0.0, 0.0, 1.0, 1.0]).expand_as(gt)
        even = (torch.as_tensor(batch.index) % 2 == 0)[:, None]
        top = torch.where(even, gt + torch.tensor([self.shift, 0.0, self.shift, 0.0]), far)
        return {"pred_boxes": torch.stack([top, gt], dim=1), "pred_valid": torch.ones(len(gt), 2, dtype=torch.bool)}


def test_predicted_box_accuracy_through_the_evaluator(shapes_tiny_root, tmp_path):
    name = "fiber_refcoco_plus"
    builder = DATASETS.get(name)({"source": "shapes", "shapes": {"size": "tiny", "seed": 0},
                                  "processors": {"image": {"params": {"size": 64}}}}, name)
    info = builder.task_info()
    assert info.task == "dense_rec"
    metric = METRICS.get("predicted_box_rec_accuracy")(task_info=info)
    evaluator = Evaluator({name: builder}, {name: [metric]}, DistributedContext(), batch_size=5, progress_bar=False,
                          task_infos={name: info}, predictions_dir=tmp_path)
    dataset = evaluator.dataset(name, "test")
    sample = dataset[0]
    assert sample.input_size.tolist() == [64.0, 64.0] and sample.image_size.tolist() == [128.0, 128.0]
    n = len(dataset)
    even = (n + 1) // 2
    results = evaluator.evaluate(BoxesModel(), "test", write_predictions=True)
    # only the top-1 box counts: the second (always the gt) never rescues an odd sample
    assert results[f"test/{name}/acc@0.5"] == pytest.approx(100.0 * even / n)
    splits = {k.split("_")[-1] for k in results if k.startswith(f"test/{name}/acc@0.5_")}
    assert splits == {"testA", "testB"}
    # the prediction file: one row per expression, the top-1 box in ORIGINAL pixels (128 px images shown at 64)
    rows = json.loads((tmp_path / f"{name}_test.json").read_text())
    assert [r["sent_id"] for r in rows] == [int(dataset[i].id) for i in range(n)]
    assert rows[0]["box"] == pytest.approx((dataset[0].gt_box * 2).tolist(), abs=0.01)
    assert rows[1]["box"] == pytest.approx([0.0, 0.0, 2.0, 2.0])
    # a box shifted by its own width has IoU 0: every sample misses
    shifted = evaluator.evaluate(BoxesModel(shift=1000.0), "test")
    assert shifted[f"test/{name}/acc@0.5"] == 0.0


def run_cli(args, capsys):
    from vlfw.cli.run import main

    assert main(args) == 0
    printed = capsys.readouterr().out
    return json.loads(printed[printed.index("{"):])


def test_vlfw_run_trains_the_rec_recipe_on_the_tiny_shapes_world(tmp_path, shapes_tiny_root, capsys):
    name = "fiber_refcoco_plus"
    metrics = run_cli([f"config={CONFIGS / 'rec' / 'shapes.yaml'}", *FAST, f"dataset_config.{name}.shapes.size=tiny",
                       f"save_dir={tmp_path}", "run_type=train_val"], capsys)
    value = metrics[f"val/{name}/acc@0.5"]
    assert math.isfinite(value) and 0.0 <= value <= 100.0
    assert (tmp_path / "checkpoints" / "update_3.pt").is_file()
    state = torch.load(tmp_path / "checkpoints" / "update_3.pt", map_location="cpu", weights_only=True)["model"]
    assert any(k.startswith(f"heads.heads.{name}.grounding.") for k in state)


REAL_TINY = ["training.batch_size=2", "training.max_updates=2", "training.eval_every=2", "training.checkpoint_every=2",
             "model_config.fiber.size=tiny", "model_config.fiber.drop_path_rate=0.0", "training.precision=fp32",
             "model_config.fiber.grounding.width=16", "model_config.fiber.grounding.num_convs=1",
             "model_config.fiber.grounding.p6p7=false"]  # no 1x1 level (GroupNorm of one value per group)


def test_real_data_recipes_on_native_fixtures(tmp_path, monkeypatch, capsys):
    """rec/refcoco_plus.yaml and grounding/flickr30k_entities.yaml (model shrunk to tiny, 64 px) on the
    hand-written native-format fixtures of tests/fixtures/native.py, train_val_test."""
    for folder, env, write in [("refcoco", "REFCOCO_DIR", native.write_refcoco),
                               ("flickr", "FLICKR30K_ENTITIES_DIR", native.write_flickr30k_entities)]:
        (tmp_path / folder).mkdir()
        write(str(tmp_path / folder))
        monkeypatch.setenv(env, str(tmp_path / folder))
    monkeypatch.setenv("FIBER_SAVE", str(tmp_path / "save"))
    name = "fiber_refcoco_plus"
    metrics = run_cli([f"config={CONFIGS / 'rec' / 'refcoco_plus.yaml'}", *FAST, *REAL_TINY,
                       "evaluation.write_predictions=true", f"dataset_config.{name}.processors.image.params.size=64"], capsys)
    assert {f"val/{name}/acc@0.5", f"test/{name}/acc@0.5_testA", f"test/{name}/acc@0.5_testB"} <= set(metrics)
    rows = json.loads((tmp_path / "save" / "refcoco_plus" / "predictions" / f"{name}_test.json").read_text())
    assert sorted(r["sent_id"] for r in rows) == [2, 3] and all(len(r["box"]) == 4 for r in rows)
    name = "fiber_flickr30k_entities"
    metrics = run_cli([f"config={CONFIGS / 'grounding' / 'flickr30k_entities.yaml'}", *FAST, *REAL_TINY,
                       "evaluation.write_predictions=true", f"dataset_config.{name}.processors.image.params.size=64"], capsys)
    assert {f"{split}/{name}/recall@{k}" for split in ("val", "test") for k in (1, 5, 10)} <= set(metrics)
    rows = json.loads((tmp_path / "save" / "flickr30k_entities" / "predictions" / f"{name}_test.json").read_text())
    assert sorted(r["phrase"] for r in rows) == ["A man", "The dog", "a dog"]
    assert all(1 <= len(r["boxes"]) <= 10 and len(r["scores"]) == len(r["boxes"]) for r in rows)


def test_the_fine_stage_starts_from_the_coarse_checkpoint(tmp_path):
    """checkpoint.pretrained: every backbone / fusion weight of a coarse (pre-training) FIBER loads into the
    REC model; only the new grounding head is missing."""
    from vlfw.runner.checkpoint import load_pretrained

    torch.manual_seed(1)
    coarse = FIBER({"size": "tiny"}, {"cc3m": task_info("pretraining", "cc3m", visual="images")})
    torch.save({"model": coarse.state_dict()}, tmp_path / "coarse.pt")
    fine = make_dense_model(REC)
    report = load_pretrained(fine, tmp_path / "coarse.pt")
    assert report["missing"] and all(k.startswith("heads.heads.refs.grounding.") for k in report["missing"])
    assert report["unexpected"] == [] and report["mismatched"] == []
    coarse_state = coarse.state_dict()
    assert all(torch.equal(v, coarse_state[k]) for k, v in fine.state_dict().items() if k.startswith("encoder."))


def test_vlfw_run_trains_the_grounding_recipe_on_the_tiny_shapes_world(tmp_path, shapes_tiny_root, capsys):
    name = "fiber_flickr30k_entities"
    metrics = run_cli([f"config={CONFIGS / 'grounding' / 'shapes.yaml'}", *FAST, f"dataset_config.{name}.shapes.size=tiny",
                       f"save_dir={tmp_path}", "run_type=train_val"], capsys)
    values = [metrics[f"val/{name}/recall@{k}"] for k in (1, 5, 10)]
    assert all(math.isfinite(v) for v in values) and values == sorted(values)
