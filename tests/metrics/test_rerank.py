"""Re-ranking retrieval with a model that scores pairs: the rank arithmetic (vlfw.metrics.rerank)
and the evaluator's re-rank step (vlfw.runner.rerank) on retrieval_recall's gathered pools, with
pairs loaded back from the dataset: k = 0, k covering every candidate, chunks, gathering."""

import contextlib
import pickle

import pytest
import torch
from torch import nn

from vlfw.data.batch import Batch, Sample, collate
from vlfw.metrics.rerank import merge_sharded_ranks, reranked_ranks
from vlfw.metrics.retrieval import RetrievalRecall, recall_from_ranks, retrieval_recall_at_k
from vlfw.runner.rerank import DatasetPairScorer, PairScoringModel, rerank_k_of, rerank_retrieval

IMAGES, CAPTIONS, DIM = 6, 2, 4


class FakePairModel(nn.Module):
    """Scores pair (image i, text t) by table[t, i]. An image's pixels hold its index, a caption's
    first id holds its text index (+1: 0 is padding). Records every score_pairs call size."""

    def __init__(self, table: torch.Tensor, k: int, batch_size: int = 4) -> None:
        super().__init__()
        self.register_buffer("table", table)
        self.k, self.batch_size = k, batch_size
        self.calls: list[int] = []
        self.unpicklable = lambda: None  # pickling anything that holds the model fails

    def retrieval_rerank_k(self) -> int:
        return self.k

    def retrieval_rerank_batch_size(self) -> int:
        return self.batch_size

    def score_pairs(self, batch):
        assert batch.attention_mask.shape == batch.input_ids.shape and batch.input_ids.dim() == 2
        self.calls.append(len(batch.image))
        image = batch.image[:, 0, 0, 0].round().long()
        text = batch.input_ids[:, 0] - 1
        return self.table[text, image]


class PairDataset(torch.utils.data.Dataset):
    """The samples behind `batch_of`: image i's pixels hold i, caption c's first id its slot + 1."""

    def __init__(self, mask, length=4):
        self.mask, self.length = mask, length

    def __len__(self):
        return IMAGES

    def __getitem__(self, index):
        batch = batch_of([index], self.mask, self.length)
        return Sample({k: v[0] for k, v in batch.items()})


def retrieval_data(seed=0):
    """IMAGES images with CAPTIONS captions each (image 4 has one); embeddings and a pair-score table."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(IMAGES, DIM, generator=g)
    texts = images[:, None, :] + 1.2 * torch.randn(IMAGES, CAPTIONS, DIM, generator=g)
    mask = torch.ones(IMAGES, CAPTIONS, dtype=torch.bool)
    mask[4, 1] = False
    table = torch.randn(IMAGES * CAPTIONS, IMAGES, generator=g)  # table[text slot, image]
    return images, texts, mask, table


def batch_of(rows, mask, length):
    """The batch of these image rows: pixels = image index, caption ids (B, K, length) led by text slot + 1."""
    rows = torch.as_tensor(rows)
    slots = rows[:, None] * CAPTIONS + torch.arange(CAPTIONS)[None, :]
    ids = torch.full((len(rows), CAPTIONS, length), 7)
    ids[:, :, 0] = slots + 1
    attention = torch.ones_like(ids)
    attention[:, :, -1] = 0
    return Batch(index=rows.clone(), image=rows.float()[:, None, None, None].expand(-1, 3, 2, 2).clone(),
                 input_ids=ids, attention_mask=attention, text_mask=mask[rows])


def outputs_of(rows, images, texts):
    rows = torch.as_tensor(rows)
    return {"image_embeddings": images[rows], "text_embeddings": texts[rows]}


def flat(texts, mask):
    owners = torch.arange(IMAGES)[:, None].expand(IMAGES, CAPTIONS)[mask]
    slots = torch.arange(IMAGES * CAPTIONS).view(IMAGES, CAPTIONS)[mask]
    return texts[mask], owners, slots


def ranks_by_score(scores, owners):
    """Ranks when `scores` (T, I) orders every candidate: strictly higher scores come first."""
    own = scores.gather(1, owners[:, None])
    text_ranks = (scores > own).sum(dim=1)
    image_ranks = [int((scores[:, i] > scores[owners == i, i].max()).sum()) for i in range(scores.shape[1])]
    return text_ranks, torch.tensor(image_ranks)


def evaluate(metric, model, images, texts, mask, parts=((0, 1, 2), (3, 4, 5)), lengths=(5, 3)):
    """What the evaluator does: update the metric, the re-rank step with `model`, compute."""
    for rows, length in zip(parts, lengths):  # batches of different caption lengths
        metric.update(batch_of(rows, mask, length), outputs_of(rows, images, texts))
    rerank_retrieval(model, PairDataset(mask), collate, metric, torch.device("cpu"), contextlib.nullcontext)
    return metric.compute()


# -- the rank arithmetic ---------------------------------------------------------------------

def test_rerank_zero_is_the_dual_encoder_ranking():
    images, texts, mask, _ = retrieval_data()
    real, owners, _ = flat(texts, mask)
    got = reranked_ranks(images, real, owners, None, k=0)
    expected = ranks_by_score(real @ images.T, owners)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    assert recall_from_ranks(*got, ks=(1, 2)) == retrieval_recall_at_k(images, real, owners, (1, 2))


def test_rerank_of_the_top_k_then_the_dual_encoder_order():
    """k between 0 and all: the top k by similarity reordered by the scorer, then the rest."""
    generator = torch.Generator().manual_seed(0)
    images, texts = torch.randn(6, 4, generator=generator), torch.randn(13, 4, generator=generator)
    owners = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 5])
    itm = torch.randn(13, 6, generator=generator)  # a made-up scorer: itm[text, image]
    similarity = texts @ images.T
    k = 3

    def position(sim_row, itm_row, is_answer):
        top = sim_row.argsort(descending=True)[:k]
        rest = sim_row.argsort(descending=True)[k:]
        order = torch.cat([top[itm_row[top].argsort(descending=True)], rest])
        return int(is_answer[order].nonzero()[0])

    text_ranks = [position(similarity[t], itm[t], torch.arange(6) == owners[t]) for t in range(13)]
    image_ranks = [position(similarity[:, i], itm[:, i], owners == i) for i in range(6)]
    got = reranked_ranks(images, texts, owners, lambda i, t: itm[t, i], k=k, chunk_size=4)
    assert got[0].tolist() == text_ranks and got[1].tolist() == image_ranks
    assert text_ranks != ranks_by_score(similarity, owners)[0].tolist()  # the re-rank moved something


def test_ties_resolve_in_the_query_favour():
    images = torch.eye(2)
    texts = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    everything_ties = lambda i, t: torch.zeros(len(i))  # noqa: E731
    text_ranks, image_ranks = reranked_ranks(images, texts, torch.tensor([0, 1]), everything_ties, k=2)
    assert text_ranks.tolist() == [0, 0] and image_ranks.tolist() == [0, 0]


def test_pair_scorer_chunks_the_pairs_and_loads_them_from_the_dataset():
    images, texts, mask, table = retrieval_data()
    metric = RetrievalRecall()
    metric.update(batch_of(list(range(IMAGES)), mask, 4), outputs_of(list(range(IMAGES)), images, texts))
    pools = metric.pools()
    model = FakePairModel(table, k=1, batch_size=2)
    scorer = DatasetPairScorer(model, PairDataset(mask), collate, pools, torch.device("cpu"), 2,
                               contextlib.nullcontext)
    image_index, text_index = torch.tensor([2, 0, 1, 1, 0]), torch.tensor([3, 3, 0, 2, 1])
    slots = torch.arange(IMAGES * CAPTIONS).view(IMAGES, CAPTIONS)[mask]
    assert scorer(image_index, text_index).tolist() == table[slots[text_index], image_index].tolist()
    assert model.calls == [2, 2, 1]


def test_rerank_k_of_a_model():
    assert rerank_k_of(nn.Linear(2, 2)) == 0 and rerank_k_of(None) == 0
    model = FakePairModel(torch.zeros(1, 1), k=3)
    assert isinstance(model, PairScoringModel) and rerank_k_of(model) == 3
    model.k = -1
    with pytest.raises(ValueError, match="retrieval_rerank_k"):
        rerank_k_of(model)


# -- retrieval_recall with the evaluator's re-rank step ------------------------------------------

def test_k_zero_is_exactly_the_dual_encoder_metric():
    images, texts, mask, table = retrieval_data()
    plain = evaluate(RetrievalRecall(ks=(1, 2)), None, images, texts, mask)
    real, owners, _ = flat(texts, mask)
    assert plain == retrieval_recall_at_k(images, real, owners, (1, 2))
    zero = FakePairModel(table, k=0)
    for model in (zero, nn.Linear(2, 2)):
        metric = RetrievalRecall(ks=(1, 2))
        assert evaluate(metric, model, images, texts, mask) == plain  # bit-identical, no rerank_k
        assert set(metric.records()[0]) == {"image_embedding", "text_embeddings", "slots"}  # embeddings only
    assert zero.calls == []


def test_k_covering_every_candidate_is_the_brute_force_pair_ranking():
    images, texts, mask, table = retrieval_data()
    real, owners, slots = flat(texts, mask)
    model = FakePairModel(table, k=IMAGES * CAPTIONS, batch_size=4)
    got = evaluate(RetrievalRecall(ks=(1, 2)), model, images, texts, mask)
    assert got.pop("rerank_k") == float(IMAGES * CAPTIONS)
    expected = recall_from_ranks(*ranks_by_score(table[slots], owners), ks=(1, 2))
    assert got == pytest.approx(expected)
    dual = retrieval_recall_at_k(images, real, owners, (1, 2))
    assert got != pytest.approx(dual)  # the data tell the two orders apart
    assert model.calls and max(model.calls) <= 4  # at most batch_size pairs per call
    assert sum(model.calls) == len(real) * IMAGES + IMAGES * len(real)  # (T + I) x min(k, candidates)


def test_intermediate_k_matches_the_rank_arithmetic():
    images, texts, mask, table = retrieval_data(seed=3)
    real, owners, slots = flat(texts, mask)
    model = FakePairModel(table, k=2)
    got = evaluate(RetrievalRecall(ks=(1, 2, 5), chunk_size=2), model, images, texts, mask)
    ranks = reranked_ranks(images, real, owners, lambda i, t: table[slots[t], i], k=2)
    assert got == {**recall_from_ranks(*ranks, ks=(1, 2, 5)), "rerank_k": 2.0}


def test_shards_split_the_scoring_and_merge_to_the_whole():
    images, texts, mask, table = retrieval_data()
    real, owners, slots = flat(texts, mask)
    counts = []

    def scorer(image_index, text_index):
        counts.append(len(image_index))
        return table[slots[text_index], image_index]

    whole = reranked_ranks(images, real, owners, scorer, k=3, chunk_size=2)
    total = sum(counts)
    counts.clear()
    parts = [reranked_ranks(images, real, owners, scorer, k=3, chunk_size=2, shard=(i, 3)) for i in (2, 0, 1)]
    merged = merge_sharded_ranks(parts)
    assert all(torch.equal(a, b) for a, b in zip(merged, whole))
    assert sum(counts) == total  # every query scored by exactly one shard
    for text_ranks, image_ranks in parts:  # each shard ranks about a third of the queries
        assert 0 < int((text_ranks >= 0).sum()) < len(real) and 0 < int((image_ranks >= 0).sum()) < IMAGES
    with pytest.raises(ValueError, match="no shard"):
        merge_sharded_ranks(parts[:2])
    with pytest.raises(ValueError, match="shard"):
        reranked_ranks(images, real, owners, scorer, k=3, shard=(3, 3))


def test_reranked_records_gather_across_ranks():
    """Two ranks' records (pickled as all_gather_object does, the padded duplicate included) give
    the single-process value; records hold embeddings only."""
    images, texts, mask, table = retrieval_data()
    model = FakePairModel(table, k=3)
    single = evaluate(RetrievalRecall(ks=(1, 2)), model, images, texts, mask)
    first, second, merged = RetrievalRecall(ks=(1, 2)), RetrievalRecall(ks=(1, 2)), RetrievalRecall(ks=(1, 2))
    first.update(batch_of([0, 1, 2], mask, 5), outputs_of([0, 1, 2], images, texts))
    second.update(batch_of([3, 4, 5, 0], mask, 3), outputs_of([3, 4, 5, 0], images, texts))
    parts = [pickle.loads(pickle.dumps(metric._records)) for metric in (first, second)]
    merged._records = {**parts[0], **parts[1]}
    rerank_retrieval(model, PairDataset(mask), collate, merged, torch.device("cpu"), contextlib.nullcontext)
    assert merged.compute() == single
    assert single["rerank_k"] == 3.0
