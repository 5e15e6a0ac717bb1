"""Retrieval: recall from the model's dual-encoder outputs vs a brute-force ranking; vlmo_itc; ITM re-ranking
(`itm_rerank`, VLMo as vlfw's PairScoringModel, and the evaluator's re-rank step driven by
model_config.vlmo.retrieval.rerank_k). The re-rank arithmetic itself is tested in tests/metrics/test_rerank.py."""

import contextlib
import math

import pytest
import torch
import torch.nn.functional as F
from vlmo_helpers import make_batch, make_model

from vlfw.data.batch import Sample, collate
from vlfw.errors import ConfigError
from vlfw.metrics.rerank import reranked_ranks
from vlfw.metrics.retrieval import RetrievalRecall, recall_from_ranks, retrieval_recall_at_k
from vlfw.registry import METRICS
from vlfw.runner.rerank import PairScoringModel, rerank_k_of, rerank_retrieval
from vlfw_vlmo.losses import VLMoContrastiveLoss
from vlfw_vlmo.metrics import VLMoRetrievalRecall
from vlfw_vlmo.rerank import itm_rerank, itm_scorer


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


# -- ITM re-ranking in the retrieval evaluation ----------------------------------------------

def retrieval_batch(images=4, captions=2, length=6):
    """`images` images with `captions` captions each (the last image has one less), as evaluated."""
    batch = make_batch("coco_retrieval", batch=images)
    ids = make_batch("coco_retrieval", batch=images * captions, length=length).input_ids
    ids = ids.roll(1, dims=0)  # captions differ from the first rows' ids of the image batch
    batch.input_ids = ids.view(images, captions, length)
    batch.attention_mask = torch.ones_like(batch.input_ids)
    batch.attention_mask[0, 1, -2:] = 0  # one padded caption
    batch.text_mask = torch.ones(images, captions, dtype=torch.bool)
    batch.text_mask[-1, -1] = False
    batch["index"] = list(range(images))
    return batch


def flat_texts(batch):
    real = batch.text_mask
    owners = torch.tensor([i for i in range(real.shape[0]) for k in range(real.shape[1]) if real[i, k]])
    return batch.input_ids[real], batch.attention_mask[real], owners


def all_pair_itm(model, batch):
    """Brute force: the ITM score of every (text, image) pair, one fused pass per pair."""
    ids, mask, _ = flat_texts(batch)
    scores = torch.empty(len(ids), len(batch.image))
    with torch.no_grad():
        for t in range(len(ids)):
            for i in range(len(batch.image)):
                logits = model.itm_logits(batch.image[i:i + 1], ids[t:t + 1], mask[t:t + 1])[0]
                scores[t, i] = logits[1] - logits[0]
    return scores


def ranks_by_score(scores, owners):
    """Ranks when `scores` (T, I) orders every candidate: strictly higher scores come first."""
    own = scores.gather(1, owners[:, None])
    text_ranks = (scores > own).sum(dim=1)
    image_ranks = []
    for i in range(scores.shape[1]):
        best = scores[owners == i, i].max()
        image_ranks.append(int((scores[:, i] > best).sum()))
    return text_ranks, torch.tensor(image_ranks)


def encode_retrieval_batch(model):
    """The retrieval batch, its flattened captions (ids, mask, owning image) and the dual-encoder outputs."""
    batch = retrieval_batch()
    ids, mask, owners = flat_texts(batch)
    with torch.no_grad():
        out = model(batch)
    return batch, ids, mask, owners, out, out["text_embeddings"][batch.text_mask]


def test_rerank_covering_all_candidates_is_brute_force_itm_ranking(model):
    batch, ids, mask, owners, out, texts = encode_retrieval_batch(model)
    expected = ranks_by_score(all_pair_itm(model, batch), owners)
    scorer = itm_scorer(model, batch.image, ids, mask, batch_size=5)
    got = reranked_ranks(out["image_embeddings"], texts, owners, scorer, k=len(texts))
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    # and the ITM order differs from the dual encoder's here, so the test can tell them apart
    dual = ranks_by_score(texts @ out["image_embeddings"].T, owners)
    assert not (torch.equal(dual[0], expected[0]) and torch.equal(dual[1], expected[1]))


def test_vlmo_is_a_pair_scoring_model_with_the_itm_margin(model):
    batch = make_batch("coco_retrieval", batch=3)
    assert isinstance(model, PairScoringModel)
    assert rerank_k_of(model) == 0 and rerank_k_of(make_model(retrieval={"rerank_k": 4})) == 4
    assert model.retrieval_rerank_batch_size() == 64
    with torch.no_grad():
        logits = model.itm_logits(batch.image, batch.input_ids, batch.attention_mask)
        scores = model.score_pairs(batch)
    assert torch.equal(scores, logits[:, 1] - logits[:, 0])


class BatchDataset(torch.utils.data.Dataset):
    """The samples of an evaluation batch, as the re-rank step loads them back by index."""

    def __init__(self, batch):
        self.batch = batch

    def __len__(self):
        return len(self.batch.image)

    def __getitem__(self, index):
        return Sample({k: v[index] for k, v in self.batch.items() if k != "dataset_name"})


def evaluate_retrieval(metric, model, batch):
    """What the evaluator does: update with the model's outputs, the re-rank step, compute."""
    with torch.no_grad():
        out = model(batch)
        metric.update(batch, out)
        rerank_retrieval(model, BatchDataset(batch), collate, metric, torch.device("cpu"), contextlib.nullcontext)
        return out, metric.compute()


def test_rerank_k_option_drives_vlfw_retrieval_recall():
    batch = retrieval_batch()
    _, _, owners = flat_texts(batch)
    reranking = make_model(retrieval={"rerank_k": 100})
    plain = make_model()
    out, got = evaluate_retrieval(METRICS.build("retrieval_recall", ks=(1, 2)), reranking, batch)
    expected = recall_from_ranks(*ranks_by_score(all_pair_itm(reranking, batch), owners), ks=(1, 2))
    assert got.pop("rerank_k") == 100.0
    assert got == pytest.approx(expected)
    texts = out["text_embeddings"][batch.text_mask]
    assert got != pytest.approx(retrieval_recall_at_k(out["image_embeddings"], texts, owners, (1, 2)))
    # the model hands nothing to the metric through its outputs, at evaluation or in training
    assert set(out) == {"image_embeddings", "text_embeddings", "logit_scale"}
    reranking.train()
    assert set(reranking(make_batch("coco_retrieval"))) == {"image_embeddings", "text_embeddings", "logit_scale"}
    # off (k = 0): vlfw's dual-encoder recall, bit for bit
    out, off = evaluate_retrieval(RetrievalRecall(ks=(1, 2)), plain, batch)
    core = RetrievalRecall(ks=(1, 2))
    core.update(batch, out)
    assert off == core.compute() and "rerank_k" not in off


def test_vlmo_retrieval_recall_is_an_alias_of_retrieval_recall():
    assert issubclass(VLMoRetrievalRecall, RetrievalRecall)
    assert METRICS.get("vlmo_retrieval_recall") is VLMoRetrievalRecall
    batch = retrieval_batch()
    reranking = make_model(retrieval={"rerank_k": 2})
    _, alias = evaluate_retrieval(METRICS.build("vlmo_retrieval_recall", ks=(1, 2)), reranking, batch)
    _, core = evaluate_retrieval(RetrievalRecall(ks=(1, 2)), reranking, batch)
    assert alias == core and alias["rerank_k"] == 2.0


def test_rerank_k_must_not_be_negative():
    with pytest.raises(ConfigError, match="rerank_k"):
        make_model(retrieval={"rerank_k": -1})
