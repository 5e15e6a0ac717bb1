"""Geometry embedding values, the zero-initialised visual gain, packing and masking."""

import math

import torch
from vlbert_helpers import build_model

from vlfw.data.batch import Sample, collate
from vlfw.errors import ConfigError
from vlfw_vlbert.heads import mlm_loss
from vlfw_vlbert.visual import geometry_embedding


def test_geometry_embedding_values():
    boxes = torch.tensor([[10.0, 20.0, 30.0, 60.0]])
    out = geometry_embedding(boxes, torch.tensor([200.0]), torch.tensor([100.0]), size=2048, wavelength=1000.0)
    assert out.shape == (1, 2048)
    values = [20 * 100 / 200, 40 * 100 / 100, 20 * 100 / 200, 40 * 100 / 100]  # xc, yc, w, h scaled
    for slot, v in enumerate(values):
        for i in (0, 1, 100, 255):
            angle = v / 1000.0 ** (i / 256)
            assert math.isclose(out[0, slot * 512 + i].item(), math.sin(angle), abs_tol=1e-5)
            assert math.isclose(out[0, slot * 512 + 256 + i].item(), math.cos(angle), abs_tol=1e-5)


def regions_batch(features=None):
    torch.manual_seed(0)
    samples = []
    for i in range(2):
        ids = torch.tensor([101, 7 + i, 8, 9, 102][: 4 + i])
        samples.append(Sample(index=i, input_ids=ids, region_features=torch.randn(3, 12),
                              region_boxes=torch.tensor([[1.0, 1.0, 9.0, 9.0], [4.0, 2.0, 20.0, 30.0], [0.0, 0.0, 5.0, 5.0]]),
                              image_size=torch.tensor([32.0, 32.0])))
    return collate(samples, "snli_ve")


def test_zero_visual_gain_starts_as_text_only_bert():
    # the gains of a model loaded from BERT (objects: auto = 0 there)
    model = build_model({"snli_ve": {"task": "classification", "num_labels": 3, "visual": "regions"}},
                        visual_gain_init={"text": 0.0, "objects": 0.0}).eval()
    assert torch.equal(model.embeddings.visual_ln_text.weight, torch.zeros(32))
    assert torch.equal(model.embeddings.visual_ln_object.weight, torch.zeros(32))
    batch = regions_batch()
    states, mask, _ = model.encode(batch.input_ids, None, batch.attention_mask, model.visual_from_batch(batch))
    other = regions_batch()
    other["region_features"] = torch.randn_like(other.region_features) * 10
    other["region_boxes"] = other.region_boxes.flip(1)
    again, _, _ = model.encode(other.input_ids, None, other.attention_mask, model.visual_from_batch(other))
    assert torch.allclose(states, again, atol=1e-6)  # appearance and geometry have no effect yet
    # the text tokens' embeddings are exactly BERT's (word + segment A + position, LayerNorm)
    e = model.embeddings
    packed = e(batch.input_ids, None, batch.attention_mask, model.visual_from_batch(batch).features)
    length = batch.input_ids.shape[1]
    bert = e.LayerNorm(e.word_embeddings(batch.input_ids) + e.token_type_embeddings.weight[0]
                       + e.position_embeddings.weight[:length])
    real = batch.attention_mask
    assert torch.allclose(packed.embeddings[:, :length][real], bert[real], atol=1e-6)
    # packing: sample 0 has 4 tokens, 4 visual elements (whole image + 3) and [END]; no gaps
    assert mask[0].sum() == 4 + 4 + 1 and mask[0, : 9].all()


def test_a_random_start_gives_the_visual_elements_their_own_embeddings():
    """From random weights the visual elements' gain starts at 1 (objects: auto): with 0 every
    visual element would enter as the same vector and the regions could not be told apart."""
    infos = {"snli_ve": {"task": "classification", "num_labels": 3, "visual": "regions"}}
    model = build_model(infos).eval()
    assert torch.equal(model.embeddings.visual_ln_object.weight, torch.ones(32))
    assert torch.equal(model.embeddings.visual_ln_text.weight, torch.zeros(32))
    batch = regions_batch()
    e = model.embeddings
    packed = e(batch.input_ids, None, batch.attention_mask, model.visual_from_batch(batch).features)
    regions = packed.embeddings.gather(1, packed.visual_positions[..., None].expand(-1, -1, 32))[0]
    assert (regions[1:] - regions[1]).abs().amax() > 0.1  # the three detections differ
    zero = build_model(infos, visual_gain_init={"text": 0.0, "objects": 0.0}).eval()
    packed = zero.embeddings(batch.input_ids, None, batch.attention_mask, zero.visual_from_batch(batch).features)
    regions = packed.embeddings.gather(1, packed.visual_positions[..., None].expand(-1, -1, 32))[0]
    assert torch.allclose(regions[1:], regions[1].expand_as(regions[1:]), atol=1e-6)  # all the same vector
    try:
        build_model(infos, visual_gain_init={"text": 0.0, "objects": "one"})
    except ConfigError as error:
        assert "visual_gain_init.objects" in str(error)
    else:
        raise AssertionError("a non-numeric gain was accepted")


def test_mlm_loss_ignores_unmasked_positions():
    logits = torch.randn(2, 5, 11)
    labels = torch.full((2, 5), -100)
    labels[0, 1], labels[1, 3] = 4, 7
    before = mlm_loss(logits, labels)
    changed = logits.clone()
    changed[labels == -100] = torch.randn_like(changed[labels == -100]) * 100
    assert torch.equal(before, mlm_loss(changed, labels))
    assert not torch.equal(before, mlm_loss(logits + torch.randn_like(logits), labels))
    # the model's MLM equals the cross-entropy of its full logits at the masked positions
    model = build_model({"cc3m": {"task": "pretraining", "visual": "regions"}}).eval()
    batch = regions_batch()
    batch["dataset_name"] = "cc3m"
    batch["mlm_labels"] = torch.full_like(batch.input_ids, -100)
    batch.mlm_labels[0, 2] = 13
    loss = model(batch)["loss/mlm"]
    states, _, _ = model.encode(batch.input_ids, None, batch.attention_mask, model.visual_from_batch(batch))
    full = model.mlm(states[:, : batch.input_ids.shape[1]])
    assert torch.allclose(loss, mlm_loss(full, batch.mlm_labels), atol=1e-5)


def test_masked_roi_pixels_are_zeroed_before_the_backbone():
    model = build_model({"cc3m": {"task": "pretraining", "visual": "images", "detector_classes": 4}}).eval()
    seen = {}
    original = model.backbone.forward

    def spy(images, boxes):
        seen["images"] = images.clone()
        return original(images, boxes)

    model.backbone.forward = spy
    image = torch.rand(3, 64, 64) + 0.5  # no pixel is 0 before masking
    boxes = torch.tensor([[8.0, 8.0, 24.0, 24.0], [40.0, 40.0, 60.0, 60.0]])
    sample = Sample(index=0, input_ids=torch.tensor([101, 9, 102]), mlm_labels=torch.tensor([-100, 9, -100]),
                    image=image, region_boxes=boxes, region_class_probs=torch.rand(2, 4),
                    masked_regions=torch.tensor([True, False]))
    out = model(collate([sample, sample], "cc3m"))
    pixels = seen["images"][0]
    assert (pixels[:, 9:23, 9:23] == 0).all()  # inside the masked RoI
    assert torch.equal(pixels[:, 41:59, 41:59], image[:, 41:59, 41:59])  # the unmasked RoI is intact
    assert torch.equal(pixels[:, 30:38, :], image[:, 30:38, :])
    assert "loss/mrc" in out and torch.isfinite(out["loss/mrc"])


def test_model_masks_regions_itself_when_the_builder_does_not():
    model = build_model({"cc3m": {"task": "pretraining", "visual": "regions", "detector_classes": 4}},
                        pretraining={"region_mask_probability": 0.5})
    batch = regions_batch()
    batch["dataset_name"] = "cc3m"
    batch["region_class_probs"] = torch.rand(2, 3, 4)
    first = model._region_mask(batch, torch.ones(2, 3, dtype=torch.bool))
    assert torch.equal(first, model._region_mask(batch, torch.ones(2, 3, dtype=torch.bool)))  # seeded by the batch
    visual = model.visual_from_batch(batch, masked=first)
    assert torch.equal(visual.masked[:, 1:], first) and not visual.masked[:, 0].any()


def test_a_sample_encodes_the_same_alone_and_in_a_padded_batch():
    """Alone, nothing is padding (no packing, attention unmasked); in a batch with a longer
    sample its padding is packed out and masked. The real elements' states must agree."""
    model = build_model({"snli_ve": {"task": "classification", "num_labels": 3, "visual": "regions"}},
                        dropout=0.0, attention_dropout=0.0).eval()
    with torch.no_grad():
        for norm in (model.embeddings.visual_ln_text, model.embeddings.visual_ln_object):
            norm.weight.fill_(1.0)  # let the visual input matter
    batch = regions_batch()  # sample 0: 4 tokens, sample 1: 5 tokens
    batch["region_mask"] = torch.tensor([[True, True, False], [True, True, True]])  # sample 0: one padded region
    alone = collate([Sample(index=0, input_ids=batch.input_ids[0, :4], region_features=batch.region_features[0, :2],
                            region_boxes=batch.region_boxes[0, :2], image_size=batch.image_size[0])], "snli_ve")
    with torch.no_grad():
        states, mask, positions = model.encode(batch.input_ids, None, batch.attention_mask, model.visual_from_batch(batch))
        single, single_mask, single_positions = model.encode(alone.input_ids, None, alone.attention_mask,
                                                             model.visual_from_batch(alone))
    assert single_mask.all() and single.shape[1] == 4 + 3 + 1  # text, whole image + 2 regions, [END]
    assert not mask[0].all()  # padding in the batch
    real = int(mask[0].sum())
    assert real == single.shape[1]
    assert torch.allclose(states[0, :real], single[0], atol=1e-5)
    assert torch.equal(positions[0, :3], single_positions[0])


def test_split_projection_is_the_linear_on_the_concatenation_and_loads_old_checkpoints():
    from vlfw_vlbert.visual import VisualFeatures

    torch.manual_seed(0)
    features = VisualFeatures(12, 16, geometry_size=64)
    concat = torch.nn.Linear(12 + 64, 16)  # the layout of checkpoints with one `projection` Linear
    mask_vector = torch.randn(12)
    report = features.load_state_dict({"projection.weight": concat.weight, "projection.bias": concat.bias,
                                       "mask_appearance": mask_vector})
    assert not report.missing_keys and not report.unexpected_keys
    appearance = torch.randn(2, 3, 12)
    boxes = torch.tensor([[[0.0, 0.0, 32.0, 32.0], [1.0, 2.0, 9.0, 12.0], [4.0, 4.0, 20.0, 30.0], [0.0, 5.0, 7.0, 9.0]]] * 2)
    size = torch.tensor([32.0, 32.0])
    masked = torch.tensor([[False, True, False], [False, False, False]])
    visible = torch.tensor([[True, False, True], [True, True, False]])  # sample 1: region 2 is padding

    def reference(app, box):
        return torch.relu(concat(torch.cat([app, geometry_embedding(box, size[:1, None], size[:1, None], 64)], -1)))

    with torch.no_grad():
        out = features(appearance, boxes, size, size, masked, mean_weights=visible)
        hidden = torch.where(masked[..., None], mask_vector, appearance)
        mean = (appearance * visible[..., None]).sum(1) / visible.sum(1, keepdim=True)  # masked / padded excluded
        expected = reference(torch.cat([mean[:, None], hidden], 1), boxes)
    assert torch.allclose(out, expected, atol=1e-5)


def test_region_features_are_z_scored_and_old_checkpoints_keep_raw_features():
    """With train statistics the model standardises the region features; a checkpoint saved
    before VL-BERT did (no region_norm keys) loads with identity statistics, so it computes what
    it computed before."""
    stats = {"region_feature_mean": [0.5] * 12, "region_feature_std": [2.0] * 12}
    infos = {"snli_ve": {"task": "classification", "num_labels": 3, "visual": "regions", **stats}}
    plain = {"snli_ve": {"task": "classification", "num_labels": 3, "visual": "regions"}}
    torch.manual_seed(0)
    model = build_model(infos).eval()
    torch.manual_seed(0)
    raw = build_model(plain).eval()  # the same weights, no statistics
    batch = regions_batch()
    batch["dataset_name"] = "snli_ve"
    scaled = regions_batch()
    scaled["region_features"] = (scaled.region_features - 0.5) / 2.0
    scaled["dataset_name"] = "snli_ve"
    with torch.no_grad():
        torch.testing.assert_close(model.visual_from_batch(batch).features, raw.visual_from_batch(scaled).features)
        old = {k: v for k, v in raw.state_dict().items()}
        assert not any(k.startswith("region_norm.") for k in old)
        model.load_state_dict(old)
        torch.testing.assert_close(model.visual_from_batch(batch).features, raw.visual_from_batch(batch).features)
