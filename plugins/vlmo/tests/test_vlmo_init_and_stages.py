"""small <- the bundled BERT; stagewise freezing; the pre-training objectives."""

import pytest
import torch
from safetensors.torch import load_file
from vlmo_helpers import TASKS, make_batch, make_model

from vlfw.errors import ConfigError
from vlfw.runner.step import loss_terms, weighted_sum
from vlfw_vlmo.losses import VLMoContrastiveLoss
from vlfw_vlmo.model import VLMo
from vlfw_vlmo.pretrained import bundled_bert_path


def test_small_init_loads_the_bundled_bert():
    model = VLMo({"size": "small", "image_size": 32, "init": "bert"}, {"vqa2": TASKS["vqa2"]})
    bert = load_file(f"{bundled_bert_path()}/model.safetensors")
    report = model.bert_init_report
    # per layer: qkv (2) + attention proj (2) + L-FFN (6) + the next norm (2); plus embeddings (4)
    assert len(report["loaded"]) == 6 * 12 + 4
    assert report["skipped"] == []
    state = model.state_dict()
    layer = "encoder.layer.3."
    q, k, v = (bert[layer + f"attention.self.{n}.weight"] for n in ("query", "key", "value"))
    assert torch.equal(state["transformer.blocks.3.attention.qkv.weight"], torch.cat([q, k, v]))
    assert torch.equal(state["transformer.blocks.3.experts.language.fc1.weight"], bert[layer + "intermediate.dense.weight"])
    assert torch.equal(state["transformer.blocks.3.experts.language.norm.weight"],
                      bert[layer + "attention.output.LayerNorm.weight"])
    assert torch.equal(state["transformer.blocks.4.norm.weight"], bert[layer + "output.LayerNorm.weight"])
    assert torch.equal(state["text_embeddings.word.weight"], bert["embeddings.word_embeddings.weight"])
    expected_positions = bert["embeddings.position_embeddings.weight"][:40] + bert["embeddings.token_type_embeddings.weight"][0]
    assert torch.allclose(state["text_embeddings.position.weight"], expected_positions)
    # the vision and VL experts are not BERT's
    assert not torch.equal(state["transformer.blocks.3.experts.vision.fc1.weight"], bert[layer + "intermediate.dense.weight"])


def masked_batch():
    batch = make_batch("cc3m", batch=4, length=8)
    labels = torch.full_like(batch.input_ids, -100)
    labels[:, 2:4] = batch.input_ids[:, 2:4]
    batch.mlm_labels = labels
    batch.input_ids = batch.input_ids.clone()
    batch.input_ids[:, 2:4] = 103
    return batch


def test_language_stage_trains_only_the_language_expert_and_text_embeddings():
    model = make_model(stage="language").train()
    out = model(masked_batch())
    assert set(out) == {"loss/mlm"}
    out["loss/mlm"].backward()
    for name, p in model.named_parameters():
        language = ".experts.language." in name or name.startswith(("text_embeddings.", "mlm_head."))
        assert p.requires_grad == language, name
        if not language:
            assert p.grad is None, name
    assert model.transformer.blocks[0].experts.language.fc1.weight.grad.abs().sum() > 0
    assert model.text_embeddings.word.weight.grad.abs().sum() > 0


def test_vision_stage_masked_image_modelling_trains_the_vision_side():
    model = make_model(stage="vision").train()
    out = model(masked_batch())
    assert set(out) == {"loss/mim"}
    out["loss/mim"].backward()
    assert model.transformer.blocks[0].experts.vision.fc1.weight.grad.abs().sum() > 0
    assert model.transformer.blocks[0].attention.qkv.weight.grad.abs().sum() > 0
    assert not model.transformer.blocks[0].experts.language.fc1.weight.requires_grad
    assert not model.text_embeddings.word.weight.requires_grad


def test_vision_language_stage_returns_the_three_objectives():
    model = make_model().train()
    out = model(masked_batch())
    assert set(out) == {"loss/itc", "loss/itm", "loss/mlm"}
    sum(out.values()).backward()
    for name in ("logit_scale", "itm_head.weight", "transformer.blocks.3.experts.vision_language.fc1.weight",
                 "mlm_head.bias", "itc_text_projection.weight"):
        assert dict(model.named_parameters())[name].grad is not None, name
    # the objectives come unweighted; the runner weights them by dataset_config.<d>.loss_weights
    terms = loss_terms([], masked_batch(), out)
    assert set(terms) == {"itc", "itm", "mlm"}
    total = weighted_sum(terms, {"mlm": 0.25}, "cc3m")
    assert torch.equal(total, out["loss/itc"] + out["loss/itm"] + 0.25 * out["loss/mlm"])


def test_a_model_objective_weight_is_a_dataset_setting_not_a_model_one():
    with pytest.raises(ConfigError, match="loss_weights"):
        make_model(loss_weights={"mlm": 0.5})


def parameters_without_gradient(model):
    return [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]


def test_every_trainable_parameter_gets_a_gradient():
    """What DDP without find_unused_parameters needs: frozen = exactly what the run never uses."""
    retrieval = VLMo({"size": "tiny", "stage": "finetune"}, {"coco_retrieval": TASKS["coco_retrieval"]}).train()
    batch = make_batch("coco_retrieval", batch=4)
    VLMoContrastiveLoss()(batch, retrieval(batch)).backward()
    assert parameters_without_gradient(retrieval) == []
    assert not retrieval.transformer.blocks[-1].experts["vision_language"].fc1.weight.requires_grad
    vqa = VLMo({"size": "tiny", "stage": "finetune"}, {"vqa2": TASKS["vqa2"]}).train()
    vqa(make_batch("vqa2"))["logits"].sum().backward()
    assert parameters_without_gradient(vqa) == []
    assert vqa.transformer.blocks[-1].experts["vision_language"].fc1.weight.grad is not None
    assert not vqa.itc_text_projection.weight.requires_grad
    assert not vqa.transformer.blocks[-1].experts["vision"].fc1.weight.requires_grad
    assert vqa.transformer.blocks[-2].experts["vision"].fc1.weight.grad is not None
    nlvr2 = VLMo({"size": "tiny", "stage": "finetune", "shared_ffn": True}, {"nlvr2": TASKS["nlvr2"]}).train()
    batch = make_batch("nlvr2", batch=2)
    batch.image = torch.stack([batch.image, batch.image.flip(-1)], dim=1)
    nlvr2(batch)["logits"].sum().backward()
    assert parameters_without_gradient(nlvr2) == []
    pretraining = VLMo({"size": "tiny"}, {"cc3m": TASKS["cc3m"]}).train()
    sum(pretraining(masked_batch()).values()).backward()
    assert parameters_without_gradient(pretraining) == []
