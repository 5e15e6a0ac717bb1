"""Every task's forward, loss and backward on a tiny batch; the pre-training objectives (ITC with the learned,
clamped temperature, ITM with hard negatives, MLM); what a run freezes; the optimiser's lr groups; the
`fused_features` interface of the grounding stage."""

import math

import pytest
import torch
import torch.nn.functional as F
from fiber_helpers import TASKS, make_batch, make_model, set_gates

from vlfw.config import load_config
from vlfw.losses.standard import CaptionCrossEntropy, CrossEntropy, SoftBinaryCrossEntropy
from vlfw.runner.optim import parameter_groups
from vlfw_fiber.losses import FIBERContrastiveLoss

LOSSES = {"vqa2": SoftBinaryCrossEntropy(), "nlvr2": CrossEntropy(), "coco_retrieval": FIBERContrastiveLoss(),
          "coco_captioning": CaptionCrossEntropy()}


def task_batch(name):
    if name == "vqa2":
        return make_batch(name, targets=torch.rand(3, 7))
    if name == "nlvr2":
        return make_batch(name, label=torch.tensor([0, 1, 1]))
    if name == "cc3m":
        batch = make_batch(name)
        labels = torch.full_like(batch.input_ids, -100)
        labels[:, 2] = batch.input_ids[:, 2]
        batch.input_ids[:, 2] = 103
        batch.mlm_labels = labels
        return batch
    return make_batch(name)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_each_task_trains_on_a_tiny_batch(name):
    model = make_model(tasks=[name]).train()
    set_gates(model, 0.1)
    batch = task_batch(name)
    outputs = model(batch)
    if name == "cc3m":
        assert set(outputs) == {"loss/itc", "loss/itm", "loss/mlm"}
        loss = sum(outputs.values())
    else:
        loss = LOSSES[name](batch, outputs)
    assert torch.isfinite(loss)
    loss.backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    without = sorted(n for n, p in trainable.items() if p.grad is None)
    assert not without, without  # what the run trains all gets a gradient: DDP needs no find_unused_parameters
    expected = {"vqa2": (7,), "nlvr2": (2,)}
    if name in expected:
        assert outputs["logits"].shape == (3, *expected[name])
    if name == "coco_captioning":
        assert outputs["caption_logits"].shape == (3, 7, 30522)


def test_unused_families_are_frozen():
    frozen = lambda model: sorted({n.split(".")[0] for n, p in model.named_parameters() if not p.requires_grad})
    assert frozen(make_model(tasks=["vqa2"])) == ["itc_image_pooler", "itc_temperature", "itc_text_pooler", "itm_head",
                                                 "mlm_head"]
    retrieval = make_model(tasks=["coco_retrieval"])
    assert not any(p.requires_grad for n, p in retrieval.named_parameters() if "fusion_" in n)
    captioning = make_model(tasks=["coco_captioning"])
    grads = {n: p.requires_grad for n, p in captioning.named_parameters() if "fusion_" in n}
    assert all(v for n, v in grads.items() if n.startswith("encoder.text")) and \
        not any(v for n, v in grads.items() if n.startswith("encoder.image"))
    assert not [n for n, p in make_model(tasks=["cc3m"]).named_parameters() if not p.requires_grad]


def test_vqa_and_nlvr2_heads_have_the_papers_shapes(model):
    h = model.hidden_size
    vqa = model.heads.heads["vqa2"].mlp
    assert [tuple(m.weight.shape) for m in vqa if isinstance(m, torch.nn.Linear)] == [(2 * h, 2 * h), (7, 2 * h)]
    nlvr2 = model.heads.heads["nlvr2"].mlp
    assert [tuple(m.weight.shape) for m in nlvr2 if isinstance(m, torch.nn.Linear)] == [(2 * h, 4 * h), (2, 2 * h)]
    assert tuple(model.itm_head.weight.shape) == (2, 2 * h)


def test_nlvr2_runs_one_fused_pass_per_image(model):
    batch = make_batch("nlvr2")
    with torch.no_grad():
        pooled = model.pair_features(batch)["pooled_pair"]
        left = model.pooled_pair(batch.image[:, 0], batch.input_ids, batch.attention_mask)
        right = model.pooled_pair(batch.image[:, 1], batch.input_ids, batch.attention_mask)
    assert torch.allclose(pooled, torch.cat([left, right], dim=-1), atol=1e-6)


def test_itc_uses_the_learned_clamped_temperature(model):
    model.train()
    assert math.isclose(float(model.logit_scale().detach()), math.log(1 / 0.07), rel_tol=1e-6)
    batch = make_batch("coco_retrieval", batch=4)
    outputs = model(batch)
    loss = FIBERContrastiveLoss()(batch, outputs)
    logits = outputs["image_embeddings"] @ outputs["text_embeddings"].T / model.itc_temperature
    target = torch.arange(4)
    assert torch.allclose(loss, (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2, atol=1e-5)
    loss.backward()
    assert model.itc_temperature.grad is not None and model.itc_temperature.grad != 0
    with torch.no_grad():
        model.itc_temperature.fill_(1e-5)
    assert math.isclose(float(model.logit_scale().detach()), math.log(1000), rel_tol=1e-6)  # up to 1000 x cosine
    assert float(model.itc_temperature.detach()) == pytest.approx(0.001)
    with torch.no_grad():
        model.itc_temperature.fill_(3.0)
    assert float(model.logit_scale().detach()) == pytest.approx(0.0, abs=1e-7)


def test_itm_scores_one_hard_negative_text_and_image_per_pair(monkeypatch):
    model = make_model(tasks=["cc3m"]).train()
    seen = {}
    original = model.itm_logits

    def spy(images, input_ids, attention_mask=None):
        seen["images"], seen["ids"] = images, input_ids
        return original(images, input_ids, attention_mask)

    monkeypatch.setattr(model, "itm_logits", spy)
    batch = task_batch("cc3m")
    model(batch)
    b = 3
    assert seen["images"].shape[0] == seen["ids"].shape[0] == 3 * b
    assert torch.equal(seen["images"][:b], batch.image) and torch.equal(seen["images"][b:2 * b], batch.image)
    clean = torch.where(batch.mlm_labels != -100, batch.mlm_labels, batch.input_ids)
    assert torch.equal(seen["ids"][:b], clean)  # ITM reads unmasked text
    for row in range(b):  # a negative text is another pair's, a negative image another pair's
        assert not torch.equal(seen["ids"][b + row], clean[row])
        assert not torch.equal(seen["images"][2 * b + row], batch.image[row])


def test_recipe_lr_multipliers_group_cross_modal_parameters_and_heads():
    config = load_config(["config=projects/fiber/configs/vqa/shapes.yaml"])
    model = make_model(tasks=["vqa2", "cc3m"])
    groups = parameter_groups(model, 0.01, config.optimizer.no_decay, config.optimizer.lr_multipliers, 1.0)
    multiplier = {name: g["lr_multiplier"] for g in groups for name in g["param_names"]}
    assert multiplier["encoder.image.stages.3.1.fusion_attention.query.weight"] == 5.0
    assert multiplier["encoder.text.layers.3.fusion_gate"] == 5.0
    assert multiplier["fused_image_pooler.0.weight"] == 5.0
    assert multiplier["heads.heads.vqa2.mlp.0.weight"] == 50.0
    assert multiplier["itm_head.weight"] == 50.0 and multiplier["mlm_head.decoder.weight"] == 50.0
    assert multiplier["encoder.image.stages.3.1.block.attn.qkv.weight"] == 1.0
    assert multiplier["encoder.text.layers.3.layer.attention.self.query.weight"] == 1.0
    assert multiplier["encoder.text.embeddings.word_embeddings.weight"] == 1.0


def test_fused_features_for_the_grounding_stage(model):
    set_gates(model, 0.5)
    batch = make_batch("vqa2")
    with torch.no_grad():
        features = model.fused_features(batch)
        unfused = model.encoder.encode_image(batch.image)
    maps = features["image_maps"]
    assert [tuple(m.shape) for m in maps] == [(3, 16, 8, 8), (3, 32, 4, 4), (3, 64, 2, 2), (3, 128, 1, 1)]
    assert features["text_states"].shape == (3, 7, 64)
    assert features["text_mask"].dtype == torch.bool and features["text_mask"][-1].tolist() == [True] * 5 + [False] * 2
    # stages 1-2 lie below the fusion and equal the image-only pass; stages 3-4 are fused
    for stage, (fused, alone) in enumerate(zip(maps, unfused.image_maps)):
        same = torch.allclose(fused, alone.permute(0, 3, 1, 2), atol=1e-6)
        assert same == (stage < 2), stage


def test_small_size_loads_the_bundled_minilm():
    from safetensors.torch import load_file

    from vlfw_fiber.model import FIBER
    from vlfw_fiber.pretrained import bundled_bert_path

    model = FIBER({"size": "small", "fusion_layers": 1, "depths": [1, 1, 1, 1], "embed_dim": 16,
                   "image_heads": [1, 1, 1, 1]}, {"vqa2": TASKS["vqa2"]})
    weights = load_file(f"{bundled_bert_path()}/model.safetensors")
    query = next(v for k, v in weights.items() if k.endswith("encoder.layer.5.attention.self.query.weight"))
    assert torch.equal(model.encoder.text.layers[5].layer.attention.self.query.weight, query)
    assert model.text_init == "bert" and model.encoder.text.layers[5].fused


def test_vqa_fits_a_fixed_batch():
    """A learning signal through the fused path: 40 AdamW steps on one batch halve the soft BCE."""
    model = make_model(tasks=["vqa2"]).train()
    batch = make_batch("vqa2", batch=4, targets=(torch.rand(4, 7, generator=torch.Generator().manual_seed(3)) > 0.7).float())
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(40):
        optimizer.zero_grad()
        loss = SoftBinaryCrossEntropy()(batch, model(batch))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    assert any(float(p.detach()) != 0.0 for n, p in model.named_parameters() if n.endswith("fusion_gate"))


def test_a_roberta_style_tokenizer_sets_vocabulary_pad_and_generation_ids():
    """Nothing assumes BERT's ids: vocabulary 600, <pad>=1, <s>=0, </s>=2 (a RoBERTa BPE tokenizer's layout)."""
    from vlfw.tasks import TextInfo
    from vlfw.testing import task_info
    from vlfw_fiber.model import FIBER

    text = TextInfo(vocab_size=600, pad_id=1, cls_id=0, sep_id=2, mask_id=4, unk_id=3)
    torch.manual_seed(0)
    model = FIBER({"size": "tiny", "dropout": 0.0, "drop_path_rate": 0.0},
                  {"coco_captioning": task_info("captioning", "coco_captioning", text=text, visual="images")}).eval()
    assert model.encoder.text.embeddings.word_embeddings.padding_idx == 1
    batch = make_batch("coco_captioning")
    batch.input_ids = batch.input_ids % 600
    batch.input_ids[-1, -2:] = 1  # <pad>
    mask = model.text_mask(batch.input_ids, None)
    assert mask[-1].tolist() == [True] * 5 + [False] * 2
    with torch.no_grad():
        assert model(batch)["caption_logits"].shape == (3, 7, 600)
    generated = model.generate(batch, max_length=4, num_beams=2)
    assert bool((generated[:, 0] == 0).all()) and int(generated.max()) < 600
