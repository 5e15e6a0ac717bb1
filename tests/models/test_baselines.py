"""Shapes of every head of the baselines on hand-made batches, and that they learn."""

import pytest
import torch

from vlfw.data.batch import Sample, collate
from vlfw.errors import ConfigError
from vlfw.losses.standard import CrossEntropy, SoftBinaryCrossEntropy
from vlfw.registry import MODELS
from vlfw.testing import task_info

CONFIG = {"hidden_size": 32, "text_layers": 1, "text_heads": 2, "cnn_channels": [8, 16],
          "vocab_size": 100}


def text(n=5):
    return torch.randint(1, 100, (n,))


def image_sample(i, **extra):
    return Sample(index=i, input_ids=text(3 + i % 3), image=torch.randn(3, 32, 32), **extra)


def region_sample(i, n=4 + 0, d=12, **extra):
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0]]).repeat(n + i % 2, 1)
    return Sample(index=i, input_ids=text(4), region_features=torch.randn(n + i % 2, d), region_boxes=boxes,
                  image_size=torch.tensor([32.0, 32.0]), **extra)


def build(name, task_infos):
    """The model for task infos given as dicts of TaskInfo fields (BERT's tokenizer ids)."""
    infos = {dataset: task_info(dataset=dataset, **fields) for dataset, fields in task_infos.items()}
    return MODELS.get(name)(CONFIG, infos)


def test_vqa_with_images_and_regions():
    for visual, make in (("images", image_sample), ("regions", region_sample)):
        model = build("late_fusion", {"vqa2": {"task": "vqa", "num_answers": 7, "region_feature_size": 12,
                                               "visual": visual}})
        batch = collate([make(i, targets=torch.rand(7)) for i in range(3)], "vqa2")
        assert model(batch)["logits"].shape == (3, 7)
        # only the encoder the dataset needs exists, so DDP sees no unused parameters
        assert hasattr(model, "image_encoder") == (visual == "images")
        assert hasattr(model, "region_encoder") == (visual == "regions")
        batch_loss = model(batch)["logits"].sum()
        batch_loss.backward()
        assert all(p.grad is not None for p in model.parameters())


def test_nlvr2_two_images_and_rec_regions():
    infos = {"nlvr2": {"task": "nlvr2", "num_labels": 2}, "refcoco": {"task": "rec"}}
    model = build("late_fusion", infos)
    pair = collate([Sample(index=i, input_ids=text(), image=torch.randn(2, 3, 32, 32)) for i in range(2)], "nlvr2")
    assert model(pair)["logits"].shape == (2, 2)
    boxes = torch.tensor([[0.0, 0.0, 16.0, 16.0], [8.0, 8.0, 30.0, 30.0], [1.0, 2.0, 5.0, 9.0]])
    rec = collate([Sample(index=i, input_ids=text(), image=torch.randn(3, 32, 32), region_boxes=boxes[: 2 + i])
                   for i in range(2)], "refcoco")
    assert model(rec)["region_logits"].shape == (2, 3)


def test_vcr_and_retrieval_outputs():
    infos = {"vcr": {"task": "vcr"}, "coco_retrieval": {"task": "retrieval"}}
    model = build("late_fusion", infos)
    vcr = collate([Sample(index=i, answer_input_ids=torch.randint(1, 100, (4, 6)),
                          rationale_input_ids=torch.randint(1, 100, (4, 9)),
                          image=torch.randn(3, 32, 32)) for i in range(2)], "vcr")
    out = model(vcr)
    assert out["answer_logits"].shape == (2, 4) and out["rationale_logits"].shape == (2, 4)
    evaluation = collate([Sample(index=i, input_ids=torch.randint(1, 100, (5, 6)), image=torch.randn(3, 32, 32))
                          for i in range(2)], "coco_retrieval")
    out = model(evaluation)
    assert out["image_embeddings"].shape == (2, 256) and out["text_embeddings"].shape == (2, 5, 256)
    assert torch.allclose(out["text_embeddings"].norm(dim=-1), torch.ones(2, 5))


def test_text_only_ignores_the_image_and_refuses_rec():
    model = build("text_only", {"snli_ve": {"task": "classification", "num_labels": 3}}).eval()
    batch = collate([image_sample(i) for i in range(2)], "snli_ve")
    first = model(batch)["logits"]
    batch["image"] = torch.randn_like(batch.image)
    assert torch.equal(first, model(batch)["logits"])
    assert not any("image" in name for name, _ in model.named_parameters())
    with pytest.raises(ConfigError, match="does not support task 'rec'"):
        build("text_only", {"refcoco": {"task": "rec"}})


def test_unknown_dataset_in_batch_is_a_clear_error():
    model = build("late_fusion", {"vqa2": {"task": "vqa", "num_answers": 3}})
    batch = collate([image_sample(0)], "gqa")
    with pytest.raises(ConfigError, match="gqa"):
        model(batch)


def test_late_fusion_learns_a_visual_rule():
    """The label is the image's mean brightness sign: only a model that sees can learn it."""
    torch.manual_seed(0)
    model = build("late_fusion", {"toy": {"task": "classification", "num_labels": 2}})
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    loss_fn = CrossEntropy()

    def make_batch():
        labels = torch.randint(0, 2, (16,))
        images = torch.randn(16, 3, 32, 32) * 0.5 + (labels.float() * 2 - 1)[:, None, None, None]
        return collate([Sample(index=i, input_ids=text(), image=images[i], label=labels[i]) for i in range(16)], "toy")

    first = loss_fn(make_batch(), model(make_batch())).item()
    for _ in range(40):
        batch = make_batch()
        loss = loss_fn(batch, model(batch))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    batch = make_batch()
    accuracy = (model(batch)["logits"].argmax(1) == batch.label).float().mean().item()
    assert accuracy > 0.9 and loss.item() < first


def test_soft_bce_is_scaled_by_the_number_of_answers():
    batch = collate([Sample(index=0, targets=torch.tensor([1.0, 0.0, 0.3, 0.0]))], "vqa2")
    logits = torch.zeros(1, 4)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, batch.targets, reduction="sum")
    assert torch.allclose(SoftBinaryCrossEntropy()(batch, {"logits": logits}), expected)



@pytest.mark.parametrize("value", [0, -0.1, "big", True])
def test_init_std_must_be_a_positive_number(value):
    from vlfw.models.base import resolve_init_std

    with pytest.raises(ConfigError, match=r"model_config\.vlmo\.init_std must be a number > 0"):
        resolve_init_std({"size": "tiny", "init_std": value}, "vlmo", {"tiny": 0.125})


def test_init_std_by_size():
    from vlfw.models.base import resolve_init_std

    table = {"tiny": 0.125}
    assert resolve_init_std({"size": "tiny", "init_std": None}, "m", table) == 0.125
    assert resolve_init_std({"size": "base", "init_std": None}, "m", table) == 0.02
    assert resolve_init_std({"size": "tiny", "init_std": 0.05}, "m", table) == 0.05
