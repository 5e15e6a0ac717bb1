"""Output shapes of every head on hand-made batches, regions and images."""

import torch
from vlbert_helpers import build_model

from vlfw.data.batch import Sample, collate


def ids(n):
    out = torch.randint(5, 200, (n,))
    out[0], out[-1] = 101, 102
    return out


def region_sample(i, n=4, d=12, **extra):
    boxes = torch.tensor([[1.0, 2.0, 10.0, 12.0]]).repeat(n + i % 2, 1)
    return Sample(index=i, input_ids=ids(4 + i), region_features=torch.randn(n + i % 2, d), region_boxes=boxes,
                  image_size=torch.tensor([32.0, 32.0]), **extra)


def image_sample(i, **extra):
    return Sample(index=i, input_ids=ids(4 + i), image=torch.randn(3, 64, 64), **extra)


def test_vqa_classification_and_rec_heads():
    infos = {"vqa2": {"task": "vqa", "num_answers": 7}, "snli_ve": {"task": "classification", "num_labels": 3},
             "refcoco_plus": {"task": "rec"}}
    model = build_model(infos).eval()
    for make in (region_sample, image_sample):
        assert model(collate([make(i) for i in range(3)], "vqa2"))["logits"].shape == (3, 7)
        assert model(collate([make(i) for i in range(2)], "snli_ve"))["logits"].shape == (2, 3)
    rec = collate([region_sample(i) for i in range(3)], "refcoco_plus")
    assert model(rec)["region_logits"].shape == (3, 5)
    boxes = torch.tensor([[0.0, 0.0, 30.0, 30.0], [10.0, 8.0, 60.0, 50.0], [1.0, 2.0, 9.0, 20.0]])
    rec = collate([image_sample(i, region_boxes=boxes[: 2 + i]) for i in range(2)], "refcoco_plus")
    assert model(rec)["region_logits"].shape == (2, 3)


def test_vcr_and_nlvr2_heads():
    infos = {"vcr": {"task": "vcr"}, "nlvr2": {"task": "nlvr2", "num_labels": 2}}
    model = build_model(infos).eval()

    def vcr(i, visual):
        object_ids = torch.full((4, 7), -1)
        object_ids[:, 2] = i % 2
        return Sample(index=i, answer_input_ids=torch.randint(5, 200, (4, 7)), answer_object_ids=object_ids,
                      rationale_input_ids=torch.randint(5, 200, (4, 9)), rationale_object_ids=torch.full((4, 9), -1),
                      object_boxes=torch.tensor([[0.0, 0.0, 20.0, 20.0], [5.0, 5.0, 30.0, 25.0]]), **visual)

    for visual in ({"image": torch.randn(3, 64, 64)},
                   {"region_features": torch.randn(3, 12), "region_boxes": torch.tensor([[0.0, 0.0, 20.0, 20.0]] * 3),
                    "image_size": torch.tensor([64.0, 64.0])}):
        out = model(collate([vcr(i, visual) for i in range(2)], "vcr"))
        assert out["answer_logits"].shape == (2, 4) and out["rationale_logits"].shape == (2, 4)
    pair = collate([Sample(index=i, input_ids=ids(5), image=torch.randn(2, 3, 64, 64)) for i in range(2)], "nlvr2")
    assert model(pair)["logits"].shape == (2, 2)


def test_pretraining_losses():
    infos = {"cc3m": {"task": "pretraining", "detector_classes": 5}}
    model = build_model(infos, pretraining={"sir": True})
    labels = torch.full((6,), -100)
    labels[2] = 17
    samples = [region_sample(i, mlm_labels=labels[: 4 + i], region_class_probs=torch.rand(4 + i % 2, 5),
                             masked_regions=torch.tensor([True, False, True, False, False][: 4 + i % 2]))
               for i in range(3)]
    out = model(collate(samples, "cc3m"))
    assert set(out) == {"loss/mlm", "loss/mrc", "loss/sir"}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in out.values())
    text_only = collate([Sample(index=i, input_ids=ids(5), mlm_labels=labels[:5]) for i in range(2)], "cc3m")
    assert set(model(text_only)) == {"loss/mlm_text"}


def test_last_layer_at_read_positions_only_changes_nothing_but_the_work():
    """The heads read [CLS] (and VQA's [MASK]); computing the last layer only there gives the
    same logits and the same gradients as computing it everywhere."""
    infos = {"vqa2": {"task": "vqa", "num_answers": 7}, "snli_ve": {"task": "classification", "num_labels": 3}}
    grads = []
    for read_only in (True, False):
        torch.manual_seed(0)
        model = build_model(infos, num_layers=2, dropout=0.0, attention_dropout=0.0,
                            last_layer_read_positions_only=read_only).train()
        torch.manual_seed(1)
        vqa = collate([region_sample(i) for i in range(3)], "vqa2")
        snli = collate([region_sample(i) for i in range(2)], "snli_ve")
        vqa_logits, snli_logits = model(vqa)["logits"], model(snli)["logits"]
        (vqa_logits.square().sum() + snli_logits.square().sum()).backward()
        grads.append((vqa_logits, snli_logits, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (vqa_a, snli_a, grad_a), (vqa_b, snli_b, grad_b) = grads
    assert torch.allclose(vqa_a, vqa_b, atol=1e-5) and torch.allclose(snli_a, snli_b, atol=1e-5)
    assert grad_a.keys() == grad_b.keys()
    assert grad_a["encoder.layer.1.intermediate.dense.weight"].abs().sum() > 0
    for name in grad_a:
        assert torch.allclose(grad_a[name], grad_b[name], atol=1e-5), name
