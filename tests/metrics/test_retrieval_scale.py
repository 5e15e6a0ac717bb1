"""Retrieval ranking at scale: chunked ranks equal full-matrix ranks (with exact ties), no tensor
bigger than chunk x max(I, T) is ever made, and re-ranking scores exactly (I + T) x k pairs."""

import torch
from torch.overrides import TorchFunctionMode

from vlfw.metrics.rerank import reranked_ranks
from vlfw.metrics.retrieval import retrieval_recall_at_k


class Shapes(TorchFunctionMode):
    """Records the element count of every tensor a torch call returns, and every matmul's output shape."""

    def __init__(self):
        super().__init__()
        self.largest, self.matmuls = 0, []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(value, torch.Tensor):
                self.largest = max(self.largest, value.numel())
        if getattr(func, "__name__", "") in ("matmul", "__matmul__", "mm"):
            self.matmuls.append(tuple(out.shape))
        return out


def tied_data(images=13, seed=0):
    """Integer embeddings in {-1, 0, 1}^3: dot products are exact small integers, so ties abound.
    1 to 4 captions per image, shuffled."""
    g = torch.Generator().manual_seed(seed)
    owners = torch.cat([torch.arange(images)] + [torch.arange(images)[torch.arange(images) % m == 0] for m in (2, 3, 5)])
    owners = owners[torch.randperm(len(owners), generator=g)]
    image_embeddings = torch.randint(-1, 2, (images, 3), generator=g).float()
    text_embeddings = torch.randint(-1, 2, (len(owners), 3), generator=g).float()
    return image_embeddings, text_embeddings, owners


def full_matrix_ranks(images, texts, owners):
    """The rank definition worked on the whole T x I matrix, one query at a time."""
    sim = (texts @ images.T).tolist()
    text_ranks = [sum(s > row[owners[t]] for s in row) for t, row in enumerate(sim)]
    image_ranks = []
    for i in range(len(images)):
        column = [row[i] for row in sim]
        best = max(column[t] for t in range(len(texts)) if owners[t] == i)
        image_ranks.append(sum(s > best for s in column))
    return torch.tensor(text_ranks), torch.tensor(image_ranks)


def test_ties_by_hand():
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    texts = torch.tensor([[1.0, 1.0], [1.0, 0.0]])  # text 0 ties both images; text 1 prefers image 0
    text_ranks, image_ranks = reranked_ranks(images, texts, torch.tensor([0, 1]), None, 0, chunk_size=1)
    # text 0: own image 0 scores 1, image 1 also 1 (a tie, not strictly higher) -> 0
    # text 1: own image 1 scores 0, image 0 scores 1 -> 1
    assert text_ranks.tolist() == [0, 1]
    # image 0: own text 0 scores 1, text 1 also 1 -> 0; image 1: own text 1 scores 0, text 0 scores 1 -> 1
    assert image_ranks.tolist() == [0, 1]


def test_chunked_ranks_equal_the_full_matrix_with_ties():
    images, texts, owners = tied_data()
    expected_text, expected_image = full_matrix_ranks(images, texts, owners)
    assert int((expected_text > 0).sum()) > 3 and int((expected_image > 0).sum()) > 3  # not trivial
    for chunk in (1, 4, 7, len(texts)):
        text_ranks, image_ranks = reranked_ranks(images, texts, owners, None, 0, chunk_size=chunk)
        assert text_ranks.tolist() == expected_text.tolist(), chunk
        assert image_ranks.tolist() == expected_image.tolist(), chunk
    # the metric's own entry point gives the recalls of those ranks
    result = retrieval_recall_at_k(images, texts, owners, ks=(1,), chunk_size=3)
    assert result["ir_r1"] == 100.0 * float((expected_text < 1).double().mean())
    assert result["tr_r1"] == 100.0 * float((expected_image < 1).double().mean())


def reranked_reference(images, texts, owners, table, k):
    """Re-ranked ranks, one query at a time: the dual encoder's top k (distinct similarities
    here, so the top k set is unique) reordered by table[t][i], then the rest in dual-encoder order."""
    sim = (texts @ images.T).tolist()

    def rank(scores_by_sim, pair_score, own):
        order = sorted(range(len(scores_by_sim)), key=lambda c: -scores_by_sim[c])
        top, rest = order[:k], order[k:]
        hits = [c for c in top if c in own]
        if hits:
            best = max(pair_score(c) for c in hits)
            return sum(pair_score(c) > best for c in top)
        best = max(scores_by_sim[c] for c in own)
        return len(top) + sum(scores_by_sim[c] > best for c in rest)

    text_ranks = [rank(sim[t], lambda i, t=t: table[t][i], {int(owners[t])}) for t in range(len(texts))]
    image_ranks = [rank([row[i] for row in sim], lambda t, i=i: table[t][i],
                        {t for t in range(len(texts)) if int(owners[t]) == i}) for i in range(len(images))]
    return text_ranks, image_ranks


def test_reranked_chunks_equal_the_reference_with_tied_pair_scores():
    g = torch.Generator().manual_seed(3)
    images, _, owners = tied_data(images=11, seed=3)
    images = torch.randn(11, 5, generator=g)
    texts = images[owners] + 1.2 * torch.randn(len(owners), 5, generator=g)
    table = torch.randint(0, 3, (len(owners), 11), generator=g).float()  # pair scores with many ties
    scorer = lambda i, t: table[t, i]  # noqa: E731
    for k in (1, 3, 8):
        expected = reranked_reference(images, texts, owners, table.tolist(), k)
        for chunk in (2, 5, len(owners)):
            text_ranks, image_ranks = reranked_ranks(images, texts, owners, scorer, k, chunk_size=chunk)
            assert text_ranks.tolist() == expected[0], (k, chunk)
            assert image_ranks.tolist() == expected[1], (k, chunk)


def test_no_tensor_bigger_than_chunk_rows_and_k_pairs_per_query():
    g = torch.Generator().manual_seed(1)
    num_images, num_texts, chunk, k = 30, 70, 5, 4
    images = torch.randn(num_images, 4, generator=g)
    texts = torch.randn(num_texts, 4, generator=g)
    owners = torch.arange(num_texts) % num_images
    calls = []

    def scorer(image_index, text_index):
        calls.append(len(image_index))
        return ((image_index * 31 + text_index * 17) % 7).float()

    for pair_scorer, top_k in ((None, 0), (scorer, k)):
        shapes = Shapes()
        with shapes:
            reranked_ranks(images, texts, owners, pair_scorer, top_k, chunk_size=chunk)
        # every intermediate is at most chunk x max(I, T) = 350 elements; the full matrix is 2100
        assert shapes.largest <= chunk * max(num_images, num_texts)
        assert shapes.matmuls and all(rows <= chunk for rows, _ in shapes.matmuls)
        assert {columns for _, columns in shapes.matmuls} == {num_images, num_texts}
    # (I + T) x k pairs in all, at most chunk x k per call
    assert sum(calls) == (num_images + num_texts) * k
    assert max(calls) == chunk * k
