"""Retrieval: recall from the model's dual-encoder outputs vs a brute-force ranking; vlmo_itc; re-ranking."""

import math

import torch
import torch.nn.functional as F

from vlmo_helpers import make_batch
from vlfw.metrics.retrieval import RetrievalRecall
from vlfw_vlmo.losses import VLMoContrastiveLoss
from vlfw_vlmo.rerank import itm_rerank


def brute_force(images, texts, owners, k):
    sim = texts @ images.T
    ir = sum(int(owners[t] in sim[t].argsort(descending=True)[:k]) for t in range(len(texts))) / len(texts)
    tr = 0
    for i in range(len(images)):
        top = sim[:, i].argsort(descending=True)[:k]
        tr += int(any(owners[t] == i for t in top))
    return 100 * ir, 100 * tr / len(images)


def test_recall_from_model_outputs_matches_brute_force(model):
    batch = make_batch("coco_retrieval", batch=6)
    captions = make_batch("coco_retrieval", batch=12).input_ids.view(6, 2, -1)
    batch.input_ids = captions
    batch.attention_mask = torch.ones_like(captions)
    batch.text_mask = torch.ones(6, 2, dtype=torch.bool)
    batch.text_mask[5, 1] = False  # one image has a single caption
    batch["index"] = list(range(6))
    with torch.no_grad():
        out = model(batch)
    metric = RetrievalRecall(ks=(1, 3))
    metric.update(batch, out)
    got = metric.compute()
    images = out["image_embeddings"]
    texts = torch.cat([out["text_embeddings"][i][batch.text_mask[i]] for i in range(6)])
    owners = torch.tensor([i for i in range(6) for k in range(2) if batch.text_mask[i, k]])
    for k in (1, 3):
        ir, tr = brute_force(images, texts, owners, k)
        assert math.isclose(got[f"ir_r{k}"], ir, abs_tol=1e-6)
        assert math.isclose(got[f"tr_r{k}"], tr, abs_tol=1e-6)


def test_vlmo_itc_uses_the_learned_temperature(model):
    batch = make_batch("coco_retrieval", batch=4)
    model.train()
    out = model(batch)
    loss = VLMoContrastiveLoss()(batch, out)
    logits = model.logit_scale.exp() * out["image_embeddings"] @ out["text_embeddings"].T
    target = torch.arange(4)
    expected = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    assert torch.allclose(loss, expected, atol=1e-5)
    loss.backward()
    assert model.logit_scale.grad is not None and model.logit_scale.grad != 0


def test_itm_rerank_reorders_the_dual_encoder_top_k(model):
    batch = make_batch("coco_retrieval", batch=5)
    with torch.no_grad():
        images = model.image_embedding(batch.image)
        texts = model.text_embedding(batch.input_ids)
    t2i, i2t = itm_rerank(model, batch.image, batch.input_ids, batch.attention_mask, images, texts, k=3)
    top = (texts @ images.T).topk(3, dim=1).indices
    assert t2i.shape == (5, 3) and i2t.shape == (5, 3)
    assert all(set(a.tolist()) == set(b.tolist()) for a, b in zip(t2i, top))
    with torch.no_grad():
        scores = model.itm_logits(batch.image[t2i[0]], batch.input_ids[[0, 0, 0]])
    margin = scores[:, 1] - scores[:, 0]
    assert bool((margin[:-1] >= margin[1:] - 1e-6).all())
