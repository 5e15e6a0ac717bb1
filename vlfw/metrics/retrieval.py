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
