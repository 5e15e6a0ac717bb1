"""VCR fine-tuning's auxiliary RoI classification ("loss/roi_classification")."""

import pytest
import torch
from vlbert_helpers import build_model

from vlfw.data.batch import Sample, collate
from vlfw.errors import ConfigError
from vlfw_vlbert.heads import soft_cross_entropy

CLASSES = 5
NO_DROPOUT = {"dropout": 0.0, "attention_dropout": 0.0}


def vcr_sample(i, visual):
    generator = torch.Generator().manual_seed(i)
    object_ids = torch.full((4, 7), -1)
    object_ids[:, 2] = i % 2
    return Sample(index=i, answer_input_ids=torch.randint(5, 200, (4, 7), generator=generator),
                  answer_object_ids=object_ids, rationale_input_ids=torch.randint(5, 200, (4, 9), generator=generator),
                  rationale_object_ids=torch.full((4, 9), -1), answer_label=torch.tensor(i % 4),
                  rationale_label=torch.tensor((i + 1) % 4),
                  object_boxes=torch.tensor([[0.0, 0.0, 20.0, 20.0], [5.0, 5.0, 30.0, 25.0]]), **visual)


def region_batch(count=2):
    samples = []
    for i in range(count):
        generator = torch.Generator().manual_seed(100 + i)
        n = 3 + i % 2  # sample 0 has a padded region
        boxes = torch.tensor([[1.0, 1.0, 20.0, 20.0], [4.0, 6.0, 30.0, 28.0],
                              [10.0, 2.0, 40.0, 50.0], [0.0, 30.0, 9.0, 60.0]])[:n]
        samples.append(vcr_sample(i, {"region_features": torch.randn(n, 12, generator=generator), "region_boxes": boxes,
                                      "image_size": torch.tensor([64.0, 64.0]),
                                      "region_class_probs": torch.rand(n, CLASSES, generator=generator)}))
    return collate(samples, "vcr")


def vcr_model(**vcr):
    torch.manual_seed(0)
    return build_model({"vcr": {"task": "vcr", "visual": "regions", "detector_classes": CLASSES}},
                       vcr=vcr, **NO_DROPOUT)


def test_unmasked_roi_classification_is_the_soft_cross_entropy_of_every_real_region():
    model = vcr_model(roi_mask_probability=0.0).train()
    batch = region_batch()
    out = model(batch)
    assert out["answer_logits"].shape == (2, 4)
    loss = out["loss/roi_classification"]
    # the same number by hand: every real detection (the prepended whole image excluded) of every
    # choice's sequence through the shared `mrc` head
    logits, targets = [], []
    visual = model.visual_from_batch(batch, boxes_key="object_boxes")
    assert visual.offset == 1  # the first detection is not the whole image: a whole-image element is prepended
    for kind in ("answer", "rationale"):
        ids = batch[f"{kind}_input_ids"]
        b, k, length = ids.shape
        states, _, positions = model.encode(ids.reshape(b * k, length), None, None, visual.repeat(k),
                                            _token_elements(model, batch, kind, visual))
        regions = model.gather_states(states, positions[:, 1:]).view(b, k, -1, states.shape[-1])
        for row in range(b):
            real = batch.region_mask[row]
            logits.append(model.mrc(regions[row][:, real].reshape(-1, states.shape[-1])))
            targets.append(batch.region_class_probs[row][real].repeat(k, 1))
    expected = soft_cross_entropy(torch.cat(logits), torch.cat(targets))  # unweighted: loss_weights weight it
    assert torch.allclose(loss, expected, atol=1e-5), (loss, expected)
    # a padded region's target plays no part, a real one's does
    padded = region_batch()
    assert not padded.region_mask[0, 3]
    padded.region_class_probs[0, 3] = torch.tensor([100.0, 0, 0, 0, 0])
    assert torch.allclose(model(padded)["loss/roi_classification"], loss, atol=1e-6)
    changed = region_batch()
    changed.region_class_probs[1, 2] = torch.tensor([100.0, 0, 0, 0, 0])
    assert not torch.allclose(model(changed)["loss/roi_classification"], loss, atol=1e-4)
    loss.backward()
    assert model.mrc.net[0].weight.grad.abs().sum() > 0 and model.encoder.layer[0].output.dense.weight.grad.abs().sum() > 0


def _token_elements(model, batch, kind, visual):
    """The visual element each token carries, as vcr_features computes it (objects -> best detection)."""
    from vlfw_vlbert.visual import box_iou_batched

    iou = box_iou_batched(batch.object_boxes, visual.boxes).masked_fill(~visual.valid[:, None], -1.0)
    iou[..., 0] = -0.5
    object_element = iou.argmax(-1)
    ids = batch[f"{kind}_object_ids"]
    b, k, length = ids.shape
    lookup = object_element[:, None].expand(-1, k, -1).gather(2, ids.clamp(min=0, max=object_element.shape[1] - 1))
    return torch.where(ids >= 0, lookup, torch.zeros_like(lookup)).reshape(b * k, length)


def test_masked_rois_hide_their_appearance_and_only_run_in_training():
    model = vcr_model(roi_mask_probability=1.0).train()  # every real RoI masked and classified
    batch = region_batch()
    loss = model(batch)["loss/roi_classification"]
    model.mask_step.zero_()
    other = region_batch()
    other["region_features"] = torch.randn_like(other.region_features) * 5  # appearance is hidden when masked
    assert torch.allclose(model(other)["loss/roi_classification"], loss, atol=1e-5)
    assert torch.isfinite(loss) and loss > 0
    model.eval()
    assert "loss/roi_classification" not in model(batch)
    off = vcr_model(roi_classification=False).train()
    assert off.mrc is None and "loss/roi_classification" not in off(batch)


def test_end_to_end_rois_are_vcr_objects_classified_by_their_labels():
    names = ["__background__", "circle", "square", "triangle", "star"]
    torch.manual_seed(0)
    model = build_model({"vcr": {"task": "vcr", "visual": "images"}}, vcr={"object_classes": names,
                                                                           "roi_mask_probability": 0.0}, **NO_DROPOUT)
    assert model.mrc.net[-1].out_features == 5
    samples = [vcr_sample(i, {"image": torch.rand(3, 64, 64)}) for i in range(2)]
    for i, sample in enumerate(samples):
        sample["objects"] = ["circle", "star"] if i == 0 else ["square", "square"]
    model.train()
    batch = collate(samples, "vcr")
    targets, valid = model._vcr_roi_targets(batch)
    assert targets.argmax(-1).tolist() == [[1, 4], [2, 2]] and valid.all()
    assert torch.isfinite(model(batch)["loss/roi_classification"])
    batch.objects[1] = ["square", "hexagon"]
    with pytest.raises(ConfigError, match="hexagon"):
        model(batch)
    with pytest.raises(ConfigError, match="object_classes"):
        build_model({"vcr": {"task": "vcr", "visual": "regions", "detector_classes": 7}}, vcr={"object_classes": names})


def test_pretrained_mrc_head_carries_over_to_vcr():
    pretrain = build_model({"cc3m": {"task": "pretraining", "visual": "regions", "detector_classes": CLASSES}})
    model = vcr_model()
    report = model.load_state_dict(pretrain.state_dict(), strict=False)
    assert not any(k.startswith("mrc.") for k in report.missing_keys)
    assert torch.equal(model.mrc.net[2].weight, pretrain.mrc.net[2].weight)


def test_region_features_without_or_with_other_class_targets():
    model = vcr_model().train()
    batch = region_batch()
    del batch["region_class_probs"]  # e.g. BUTD TSV features: no targets, no auxiliary loss
    out = model(batch)
    assert "loss/roi_classification" not in out and out["answer_logits"].shape == (2, 4)
    other = region_batch()
    other["region_class_probs"] = torch.rand(2, 4, CLASSES + 2)
    with pytest.raises(ConfigError, match="detector_classes"):
        model(other)
