"""Image-text retrieval: Recall@K in both directions, computed in chunks; optionally on the order
re-ranked by a model that scores (image, text) pairs (the evaluator's re-rank step)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Hashable, Sequence

import torch

from vlfw.data.batch import Batch
from vlfw.metrics.base import Metric
from vlfw.metrics.common import output, require_records, sample_keys
from vlfw.metrics.rerank import reranked_ranks
from vlfw.registry import METRICS


def retrieval_recall_at_k(
    image_embeddings: torch.Tensor,
    text_embeddings: torch.Tensor,
    text_to_image: torch.Tensor,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = 1024,
) -> dict[str, float]:
    """Recall@K (x100) for text->image ("ir_r<k>") and image->text ("tr_r<k>"), and "r_mean".

    Similarity is text @ image.T. A text's rank is the number of images scoring strictly higher
    than its own image; an image's rank is the number of texts scoring strictly higher than its
    best caption (a hit when any of its captions is in the top K). Only `chunk_size` rows of the
    similarity matrix exist at a time.
    """
    text_ranks, image_ranks = reranked_ranks(image_embeddings, text_embeddings, text_to_image, None, 0, chunk_size)
    return recall_from_ranks(text_ranks, image_ranks, ks)


def recall_from_ranks(text_ranks: torch.Tensor, image_ranks: torch.Tensor,
                      ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Recall@K (x100) from 0-based ranks: ir_r<k> (text->image), tr_r<k> (image->text), r_mean."""
    result: dict[str, float] = {}
    for k in ks:
        result[f"ir_r{int(k)}"] = 100.0 * float((text_ranks < int(k)).double().mean())
    for k in ks:
        result[f"tr_r{int(k)}"] = 100.0 * float((image_ranks < int(k)).double().mean())
    result["r_mean"] = sum(result.values()) / len(result)
    return result


@torch.no_grad()
def top_candidates(image_embeddings: torch.Tensor, text_embeddings: torch.Tensor, text_to_image: torch.Tensor,
                   top_n: int = 10, chunk_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `top_n` candidates of every query, best first: (T, n) image positions per text,
    (I, n) text positions per image (n = min(top_n, number of candidates)).

    Ordered by decreasing similarity (text @ image.T); among equal scores the query's own right
    answers come first, so the position of the first right answer in a list is exactly the rank
    `retrieval_recall_at_k` counts (the candidates scoring strictly higher)."""
    images = image_embeddings.detach().float().cpu()
    texts = text_embeddings.detach().float().cpu()
    targets = torch.as_tensor(text_to_image, dtype=torch.long).reshape(-1).cpu()

    def ordered(similarity: torch.Tensor, own: torch.Tensor, n: int) -> torch.Tensor:
        right_first = own.to(torch.int8).sort(dim=1, descending=True, stable=True).indices
        by_score = similarity.gather(1, right_first).sort(dim=1, descending=True, stable=True).indices
        return right_first.gather(1, by_score)[:, :n]

    text_lists, image_lists = [], []
    for start in range(0, len(texts), chunk_size):
        queries = torch.arange(start, min(start + chunk_size, len(texts)))
        own = torch.arange(len(images))[None, :] == targets[queries][:, None]
        text_lists.append(ordered(texts[queries] @ images.T, own, min(top_n, len(images))))
    for start in range(0, len(images), chunk_size):
        queries = torch.arange(start, min(start + chunk_size, len(images)))
        own = targets[None, :] == queries[:, None]
        image_lists.append(ordered(images[queries] @ texts.T, own, min(top_n, len(texts))))
    return torch.cat(text_lists), torch.cat(image_lists)


def ranks_from_lists(ranked: Sequence[Sequence[Hashable]], right: Sequence[set]) -> torch.Tensor:
    """0-based rank of each query's first right answer in its ranked list; a query whose list holds
    none of them gets a rank past every k (a miss)."""
    missing = 1 << 30
    ranks = [next((position for position, candidate in enumerate(candidates) if candidate in answers), missing)
             for candidates, answers in zip(ranked, right)]
    return torch.tensor(ranks, dtype=torch.long)


@dataclass
class RetrievalPools:
    """What a retrieval evaluation ranks: every image and caption embedding of the split.

    `image_keys[i]`: the record key (dataset index) of image i; `text_to_image[t]`: the image of
    caption t; `text_slots[t]`: that caption's position among its sample's captions."""

    image_embeddings: torch.Tensor  # (I, D)
    text_embeddings: torch.Tensor  # (T, D)
    text_to_image: torch.Tensor  # (T,)
    image_keys: list[Hashable]
    text_slots: torch.Tensor  # (T,)


@METRICS.register("retrieval_recall")
class RetrievalRecall(Metric):
    """Retrieval over the evaluated split: one sample per image with its K captions.

    Reads outputs["image_embeddings"] (B, D), outputs["text_embeddings"] (B, K, D) and, when
    present, batch["text_mask"] (B, K) marking real captions. Params: ks, chunk_size. Records hold
    embeddings only. When the evaluator re-ranks (its re-rank step, vlfw.runner.rerank, with a
    model that scores pairs), it hands the re-ranked ranks in through `set_ranks`, and the
    results are those ranks' recalls with `rerank_k` added.
    """

    primary = "r_mean"

    def __init__(self, ks: Sequence[int] = (1, 5, 10), chunk_size: int = 1024, **params: Any) -> None:
        super().__init__(ks=ks, chunk_size=chunk_size, **params)
        self.ks = tuple(int(k) for k in ks)
        self.chunk_size = int(chunk_size)

    def reset(self) -> None:
        super().reset()
        self._ranks: tuple[torch.Tensor, torch.Tensor, int] | None = None

    def update(self, batch: Batch, outputs: dict[str, torch.Tensor]) -> None:
        images = output(outputs, "image_embeddings", "retrieval_recall").detach().float().cpu()
        texts = output(outputs, "text_embeddings", "retrieval_recall").detach().float().cpu()
        if texts.dim() != 3:
            raise ValueError("retrieval_recall: text_embeddings must be (B, K, D) at evaluation, "
                             f"got shape {tuple(texts.shape)}")
        mask = batch.get("text_mask")
        mask = (torch.ones(texts.shape[:2], dtype=torch.bool) if mask is None
                else torch.as_tensor(mask, dtype=torch.bool).cpu())
        for i, key in enumerate(sample_keys(batch)):
            slots = mask[i].nonzero().reshape(-1)
            # clone: a view would pickle (and gather) the whole batch's storage
            self.add(key, {"image_embedding": images[i].clone(), "text_embeddings": texts[i][slots].clone(),
                           "slots": slots.clone()})

    def pools(self) -> RetrievalPools:
        """Every image and caption of the records (after `gather`: of the whole split)."""
        keyed = self.keyed_records()
        require_records(keyed, "retrieval_recall")
        records = [r for _, r in keyed]
        return RetrievalPools(
            image_embeddings=torch.stack([r["image_embedding"] for r in records]),
            text_embeddings=torch.cat([r["text_embeddings"] for r in records]),
            text_to_image=torch.cat([torch.full((len(r["text_embeddings"]),), i, dtype=torch.long)
                                     for i, r in enumerate(records)]),
            image_keys=[k for k, _ in keyed],
            text_slots=torch.cat([r["slots"] for r in records]))

    @property
    def rerank_k(self) -> int:
        """The k of the re-ranked ranks handed in by `set_ranks` (0: the dual encoder's own ranks)."""
        return 0 if self._ranks is None else self._ranks[2]

    def set_ranks(self, text_ranks: torch.Tensor, image_ranks: torch.Tensor, rerank_k: int) -> None:
        """Re-ranked 0-based ranks of every query of `pools()` (from the evaluator's re-rank step)."""
        self._ranks = (text_ranks, image_ranks, int(rerank_k))

    def summarize(self, records: list[Any]) -> dict[str, float]:
        require_records(records, "retrieval_recall")
        if self._ranks is not None:
            text_ranks, image_ranks, k = self._ranks
            result = recall_from_ranks(text_ranks, image_ranks, self.ks)
            result["rerank_k"] = float(k)
            return result
        pools = self.pools()
        return retrieval_recall_at_k(pools.image_embeddings, pools.text_embeddings, pools.text_to_image, self.ks,
                                     self.chunk_size)
