import math

import pytest
import torch

from vlfw.errors import ConfigError
from vlfw.registry import MODELS
from vlfw.testing import shapes_builder
from vlfw_cmal.cmac import amc_targets
from vlfw_cmal.config import OBJECTIVES, PAPER_GAMMA
from vlfw_cmal.pretrained import bundled_bert_path, read_bert

NAME = "cmal_pretraining"
QUIET = {"size": "tiny", "dropout": 0.0}


def batch_of(builder, count=8, name=NAME):
    dataset = builder.build("train")
    batch = builder.collate([dataset[i] for i in range(count)])
    batch["dataset_name"] = name
    return batch


@pytest.fixture(scope="module")
def pretraining(shapes_tiny_root):
    builder = shapes_builder(NAME)
    return builder, batch_of(builder), builder.task_info()


def build(info, name=NAME, **config):
    torch.manual_seed(0)
    return MODELS.get("cmal")({**QUIET, **config}, {name: info})


def grad_norms(model):
    """Top-level part (visual, text, cmap, cmai, cmac.word, cmac.region, mlm, mrm, itm, vtc, ...) ->
    summed |grad| of its parameters (the MLM decoder is tied to text.words)."""
    norms = {}
    for name, parameter in model.named_parameters():
        parts = name.split(".")
        part = ".".join(parts[:2]) if parts[0] == "cmac" else parts[0]
        grad = 0.0 if parameter.grad is None else float(parameter.grad.abs().sum())
        norms[part] = norms.get(part, 0.0) + grad
    return norms


def test_amc_recovers_the_clean_word_and_the_region_class_and_mlm_mrm_leave_anchors_alone(pretraining):
    builder, batch, info = pretraining
    model = build(info, cmap={"swap_probability": 1.0}).train()
    clean = model.umse(batch, batch.input_ids)
    hybrid, _ = model.fuse(*clean, batch=batch, scan=None, generator=torch.Generator().manual_seed(0))
    rows, words, regions = amc_targets(hybrid, batch.input_ids, batch.region_class_probs)
    assert len(rows) > 0 and bool(hybrid.swapped[rows].all())
    names = info.detector_class_names
    for row, word, region in zip(rows.tolist(), words.tolist(), regions.tolist()):
        b, anchor = int(hybrid.rows[row]), int(hybrid.anchor[row])
        # the word slot j now holds region i's UMSE state; its target is word j's own clean id ...
        assert torch.equal(hybrid.features[row, hybrid.word_slot[row]], clean[0][b, 1 + hybrid.region_index[row]])
        assert word == int(batch.input_ids[b, hybrid.token_index[row]]) != info.text.mask_id
        # ... and the region slot's target is region i's own detector class, the class the word names
        assert region == int(batch.region_class_probs[b, hybrid.region_index[row]].argmax())
        text = builder.text_processor.decode(batch.input_ids[b][batch.anchor_token_mask[b, anchor]])
        assert builder.anchor_processor.thesaurus.normalise(text) == names[region]
    # MLM masks only non-anchor words, MRM only non-anchor regions
    anchor_tokens = (batch.anchor_token_mask & batch.anchor_mask[..., None]).any(dim=1)
    assert bool(anchor_tokens.any()) and bool((batch.mlm_labels != -100).any())
    assert not bool((batch.mlm_labels != -100)[anchor_tokens].any())
    assert torch.equal(batch.mlm_input_ids[anchor_tokens], batch.input_ids[anchor_tokens])
    for b in range(len(batch.input_ids)):
        anchored = set(batch.anchor_region_index[b][batch.anchor_mask[b]].tolist())
        masked = set(batch.mrm_regions[b].nonzero().flatten().tolist())
        assert masked and not masked & anchored


def test_each_objective_trains_only_its_own_parts(pretraining):
    _, batch, info = pretraining
    model = build(info, pretraining={"vtc_projection_size": 32}).train()
    shared = {"visual", "text", "cmap", "cmai"}
    heads = {"amc": {"cmac.word", "cmac.region"}, "mlm": {"mlm"}, "mrm": {"mrm"}, "itm": {"itm"}, "vtc": {"vtc"}}
    for objective in OBJECTIVES:
        model.zero_grad(set_to_none=True)
        model.dataset_objectives[NAME] = (objective,)
        losses = model(batch)
        assert set(losses) == ({"loss/amc_word", "loss/amc_region"} if objective == "amc" else {f"loss/{objective}"})
        sum(losses.values()).backward()
        norms = grad_norms(model)
        reached = {part for part, norm in norms.items() if norm > 0}
        expected = {"visual", "text", "vtc"} if objective == "vtc" else shared | heads[objective]
        assert reached == expected, (objective, sorted(reached), sorted(expected))
    # VTC stops at UMSE: neither CMAP nor CMAI, and AMC's word head gets nothing from MRM (asserted above)


def test_an_anchor_free_batch_still_trains(shapes_tiny_root):
    for name in (NAME, "cmal_amc"):
        builder = shapes_builder(name, processors={"anchors": {"type": None}})
        batch = batch_of(builder, name=name)
        assert batch.anchor_mask.numel() == 0
        model = build(builder.task_info(), name=name).train()
        losses = model(batch)
        assert losses["loss/amc_word"].item() == 0.0 and losses["loss/amc_region"].item() == 0.0
        assert "loss/mlm" in losses  # AMC without anchors trains MLM on the batch instead
        total = sum(losses.values())
        assert math.isfinite(total.item()) and total.item() > 0
        total.backward()
        norms = grad_norms(model)
        assert all(norms[part] > 0 for part in ("visual", "text", "cmap", "cmai", "mlm")), norms
    # anchor_free: none -> AMC's zero, with the graph of the pass (finite, no gradient into anything)
    model = build(builder.task_info(), name="cmal_amc", pretraining={"anchor_free": "none"}).train()
    losses = model(batch)
    assert set(losses) == {"loss/amc_word", "loss/amc_region"}
    total = sum(losses.values())
    assert total.item() == 0.0 and total.requires_grad
    total.backward()
    assert max(grad_norms(model).values()) == 0.0


def test_the_in_model_sampler_draws_one_objective_with_the_gamma_proportions(pretraining):
    _, batch, info = pretraining
    model = build(info, pretraining={"sample_objectives": True}).train()
    counts = dict.fromkeys(OBJECTIVES, 0)
    draws = 2000
    for step in range(draws):
        model.objective_step.fill_(step)
        (objective,) = model.batch_objectives(batch)
        counts[objective] += 1
    for objective, share in PAPER_GAMMA.items():
        assert abs(counts[objective] / draws - share) < 0.04, counts
    losses = model(batch)  # one objective's losses only
    assert len({k.split("/")[1].split("_")[0] for k in losses}) == 1


def test_objectives_switched_off_build_no_heads_and_a_dataset_left_without_any_is_an_error(shapes_tiny_root):
    info = shapes_builder("cmal_mrm").task_info()
    assert info.extra["cmal_objectives"] == ("mrm",)
    model = build(info, name="cmal_mrm")
    assert hasattr(model, "mrm") and not any(hasattr(model, h) for h in ("cmac", "mlm", "itm", "vtc"))
    with pytest.raises(ConfigError, match="model_config.cmal.pretraining turns off"):
        build(info, name="cmal_mrm", pretraining={"mrm": False})


def test_small_starts_from_the_bundled_bert(pretraining):
    _, batch, info = pretraining
    model = MODELS.get("cmal")({"size": "small"}, {NAME: info})
    assert not model.bert_report["skipped"]
    bert = read_bert(bundled_bert_path())
    layer = model.cmai.layers[5]
    prefix = "encoder.layer.5.attention.self."
    assert torch.equal(layer.qkv.weight, torch.cat([bert[f"{prefix}{n}.weight"] for n in ("query", "key", "value")]))
    assert torch.equal(layer.output_norm.weight, bert["encoder.layer.5.output.LayerNorm.weight"])
    # the textual UMSE's input is exactly BERT's embedding output (its FC starts as the identity)
    ids = batch.input_ids[:2]
    text = model.text
    ours = text.norm(text.project(text.words(ids) + text.positions(torch.arange(ids.shape[1]))[None]))
    positions = bert["embeddings.position_embeddings.weight"][: ids.shape[1]] + bert["embeddings.token_type_embeddings.weight"][0]
    theirs = torch.nn.functional.layer_norm(bert["embeddings.word_embeddings.weight"][ids] + positions, (384,),
                                            bert["embeddings.LayerNorm.weight"], bert["embeddings.LayerNorm.bias"], 1e-12)
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_nlvr2_pools_each_image_with_the_sentence(shapes_tiny_root):
    builder = shapes_builder("nlvr2", visual="regions", features={"format": "npy"})
    batch = batch_of(builder, 3, "nlvr2")
    model = build(builder.task_info(), name="nlvr2").eval()
    with torch.no_grad():
        pair = model.pair_features(batch)["pooled_pair"]
        for image in range(2):
            single = batch.select([0, 1, 2])
            for key in ("region_features", "region_boxes", "region_mask", "image_size"):
                single[key] = batch[key][:, image]
            pooled = model.pooled_features(single)["pooled"]
            assert torch.allclose(pair[:, 64 * image: 64 * (image + 1)], pooled, atol=1e-5)
        assert model(batch)["logits"].shape == (3, 2)


def test_the_released_codes_choices_are_options(pretraining):
    _, batch, info = pretraining
    model = build(info, umse=False, cmap={"scan": "one"}, pretraining={"vtc": False}).train()
    assert model.visual.layer is None and model.text.layer is None and not hasattr(model, "vtc")
    losses = model(batch)
    assert "loss/vtc" not in losses and all(math.isfinite(v.item()) for v in losses.values())
    clean = model.umse(batch, batch.input_ids)
    hybrid, _ = model.fuse(*clean, batch=batch, scan=None, generator=torch.Generator().manual_seed(0))
    assert hybrid.rows.tolist() == list(range(len(batch.input_ids)))  # one sequence per sample
    each = build(info)
    hybrid, _ = each.fuse(*each.umse(batch, batch.input_ids), batch=batch, scan=None)
    assert len(hybrid.rows) == sum(max(1, min(8, int(m.sum()))) for m in batch.anchor_mask)


def test_padding_in_the_batch_changes_no_prediction(shapes_tiny_root):
    """A sample's logits alone equal its logits in a batch padded to another sample's regions and
    words: the hybrid sequence's positions count the sample's own slots."""
    builder = shapes_builder("vqa2", visual="regions", features={"format": "npy"})
    dataset = builder.build("val")
    model = build(builder.task_info(), name="vqa2").eval()
    short = dataset[0]
    for key in ("region_features", "region_boxes", "region_class_probs", "region_mask"):
        if key in short and torch.is_tensor(short[key]):
            short[key] = short[key][:3]  # fewer regions than the other samples
    others = [dataset[i] for i in range(1, 4)]
    assert all(o.region_features.shape[0] > 3 for o in others)
    with torch.no_grad():
        alone = model(builder.collate([short]))["logits"]
        together = model(builder.collate([short, *others]))["logits"][:1]
    torch.testing.assert_close(alone, together, rtol=1e-5, atol=1e-5)
