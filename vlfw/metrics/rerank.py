"""The rank arithmetic of re-ranked retrieval (pure functions; no model here).

A dual encoder ranks every candidate by embedding similarity; a pair scorer (an ITM / fusion
head, called by the evaluator's re-rank step in vlfw.runner.rerank) can then re-score each
query's top k candidates. The re-ranked order of one query's candidates is: the dual encoder's top k, reordered by
the pair score, then every other candidate in dual-encoder order. k = 0 is the dual encoder
alone; k >= the number of candidates is a brute-force ranking of all of them by the pair score.
Cost: (T + I) x k scored pairs for T texts and I images instead of T x I.

The evaluator applies it when the evaluated model implements
`vlfw.runner.rerank.PairScoringModel` and asks for k > 0.
"""

from __future__ import annotations

from typing import Callable

import torch

# (image_index (n,), text_index (n,)) -> match score (n,), higher = better match
PairScorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _as_float_cpu(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().float().cpu()


@torch.no_grad()
def reranked_ranks(image_embeddings: torch.Tensor, text_embeddings: torch.Tensor, text_to_image: torch.Tensor,
                   score_pairs: PairScorer | None, k: int, chunk_size: int = 256,
                   shard: tuple[int, int] = (0, 1)) -> tuple[torch.Tensor, torch.Tensor]:
    """0-based rank of the right answer of every query in the re-ranked order (k = 0: the
    dual encoder's order; `retrieval_recall_at_k` is this with k = 0).

    text->image: the rank of the text's image; image->text: the rank of the image's best-placed
    caption. A rank counts the candidates placed strictly before
    the answer, so exact ties resolve in the query's favour. Only `chunk_size` queries' rows of
    the similarity matrix exist at a time. Returns (text_ranks (T,), image_ranks (I,)).

    shard = (index, count): rank only the index-th of `count` contiguous slices of the text
    queries and of the image queries (the others are -1), so that `count` processes split the
    pair scoring; `merge_sharded_ranks` of all the shards' results is the unsharded result.
    """
    images, texts = _as_float_cpu(image_embeddings), _as_float_cpu(text_embeddings)
    targets = torch.as_tensor(text_to_image, dtype=torch.long).reshape(-1).cpu()
    num_images, num_texts = images.shape[0], texts.shape[0]
    if targets.numel() != num_texts:
        raise ValueError(f"text_to_image has {targets.numel()} entries for {num_texts} texts")
    if num_texts == 0 or num_images == 0:
        raise ValueError("retrieval recall needs at least one image and one text")
    if int(targets.min()) < 0 or int(targets.max()) >= num_images:
        raise ValueError(f"text_to_image must index the {num_images} images")
    captions_per_image = torch.bincount(targets, minlength=num_images)
    if bool((captions_per_image == 0).any()):
        missing = int((captions_per_image == 0).nonzero()[0])
        raise ValueError(f"image {missing} has no caption: image->text recall is undefined for it")
    index, count = (int(v) for v in shard)
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard must be (index, count) with 0 <= index < count, got {shard}")
    k = int(k)
    if k < 0:
        raise ValueError(f"re-rank k must be >= 0, got {k}")
    if k > 0 and score_pairs is None:
        raise ValueError("re-ranking with k > 0 needs a pair scorer")

    def ranks(similarity: torch.Tensor, own: torch.Tensor, queries: torch.Tensor, text_queries: bool):
        """similarity (c, N); own (c, N) bool: the query's right answers."""
        best = similarity.masked_fill(~own, float("-inf")).max(dim=1, keepdim=True).values
        top_k = min(k, similarity.shape[1])
        if top_k == 0:
            return (similarity > best).sum(dim=1)
        top = similarity.topk(top_k, dim=1).indices                           # (c, k)
        owners = queries[:, None].expand_as(top).reshape(-1)
        pairs = (top.reshape(-1), owners) if text_queries else (owners, top.reshape(-1))
        scores = _as_float_cpu(score_pairs(*pairs)).view_as(top)
        hit = own.gather(1, top)
        best_score = scores.masked_fill(~hit, float("-inf")).max(dim=1, keepdim=True).values
        in_top = (scores > best_score).sum(dim=1)
        # no right answer in the top k: it comes after all k, in dual-encoder order among the rest
        rest = similarity.scatter(1, top, float("-inf"))
        after_top = top_k + (rest > best).sum(dim=1)
        return torch.where(hit.any(dim=1), in_top, after_top)

    def my_chunks(total: int):
        low, high = total * index // count, total * (index + 1) // count
        for start in range(low, high, chunk_size):
            yield torch.arange(start, min(start + chunk_size, high))

    text_ranks = torch.full((num_texts,), -1, dtype=torch.long)
    for queries in my_chunks(num_texts):
        own = torch.arange(num_images)[None, :] == targets[queries][:, None]
        text_ranks[queries] = ranks(texts[queries] @ images.T, own, queries, text_queries=True)
    image_ranks = torch.full((num_images,), -1, dtype=torch.long)
    for queries in my_chunks(num_images):
        own = targets[None, :] == queries[:, None]
        image_ranks[queries] = ranks(images[queries] @ texts.T, own, queries, text_queries=False)
    return text_ranks, image_ranks


def merge_sharded_ranks(parts: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """The ranks of every query from the results of all shards of `reranked_ranks` (any order)."""
    text_ranks = torch.stack([p[0] for p in parts]).max(dim=0).values
    image_ranks = torch.stack([p[1] for p in parts]).max(dim=0).values
    if bool((text_ranks < 0).any()) or bool((image_ranks < 0).any()):
        raise ValueError("merge_sharded_ranks: some queries were ranked by no shard")
    return text_ranks, image_ranks
