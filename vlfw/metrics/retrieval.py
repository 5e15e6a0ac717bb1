"""Image-text retrieval: Recall@K in both directions, computed in chunks; optionally on the order
re-ranked by a model that scores (image, text) pairs (vlfw.metrics.rerank)."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from vlfw.data.batch import Batch, pad_stack
from vlfw.metrics.base import Metric, process_group
from vlfw.metrics.common import field, output, require_records, sample_keys
from vlfw.metrics.rerank import PairScoringModel, merge_sharded_ranks, pair_scorer, rerank_k_of, reranked_ranks
from vlfw.registry import METRICS
from vlfw.runner.distributed import all_gather_object


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


@METRICS.register("retrieval_recall")
class RetrievalRecall(Metric):
    """Retrieval over the evaluated split: one sample per image with its K captions.

    Reads outputs["image_embeddings"] (B, D), outputs["text_embeddings"] (B, K, D) and, when
    present, batch["text_mask"] (B, K) marking real captions. Params: ks, chunk_size.

    When the model bound by the evaluator implements `vlfw.metrics.rerank.PairScoringModel` and
    asks for k > 0, each record also keeps the sample's batch["image"] and its captions'
    input_ids / attention_mask, and the recalls are those of the re-ranked order (each query's
    dual-encoder top k re-scored by `model.score_pairs`), with `rerank_k` added to the results.
    """

    primary = "r_mean"

    def __init__(self, ks: Sequence[int] = (1, 5, 10), chunk_size: int = 1024, **params: Any) -> None:
        super().__init__(ks=ks, chunk_size=chunk_size, **params)
        self.ks = tuple(int(k) for k in ks)
        self.chunk_size = int(chunk_size)
        self.rerank_k = 0
        self._scoring_model: PairScoringModel | None = None

    def bind_model(self, model: Any) -> None:
        self.rerank_k = rerank_k_of(model)
        self._scoring_model = model if self.rerank_k > 0 else None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_scoring_model"] = None  # a copy or pickle of the metric never carries the model
        return state

    def update(self, batch: Batch, outputs: dict[str, torch.Tensor]) -> None:
        images = output(outputs, "image_embeddings", "retrieval_recall").detach().float().cpu()
        texts = output(outputs, "text_embeddings", "retrieval_recall").detach().float().cpu()
        if texts.dim() != 3:
            raise ValueError("retrieval_recall: text_embeddings must be (B, K, D) at evaluation, "
                             f"got shape {tuple(texts.shape)}")
        mask = batch.get("text_mask")
        mask = (torch.ones(texts.shape[:2], dtype=torch.bool) if mask is None
                else torch.as_tensor(mask, dtype=torch.bool).cpu())
        if self.rerank_k > 0:
            self._update_for_rerank(batch, images, texts, mask)
            return
        for i, key in enumerate(sample_keys(batch)):
            # clone: a view would pickle (and gather) the whole batch's storage
            self.add(key, {"image": images[i].clone(), "texts": texts[i][mask[i]].clone()})

    def _update_for_rerank(self, batch: Batch, images: torch.Tensor, texts: torch.Tensor,
                           mask: torch.Tensor) -> None:
        """The records also hold what `score_pairs` needs once every record is in."""
        pixels = field(batch, "image", "retrieval_recall (re-ranking)").detach().cpu()
        ids = field(batch, "input_ids", "retrieval_recall (re-ranking)").detach().cpu()
        if ids.dim() != 3:
            raise ValueError("retrieval_recall (re-ranking): input_ids must be (B, K, L) at evaluation, "
                             f"got shape {tuple(ids.shape)}")
        attention = batch.get("attention_mask")
        attention = torch.ones_like(ids) if attention is None else attention.detach().cpu()
        for i, key in enumerate(sample_keys(batch)):
            real = mask[i]
            self.add(key, {"image": images[i].clone(), "texts": texts[i][real].clone(),
                           "pixels": pixels[i].clone(), "caption_ids": ids[i][real].clone(),
                           "caption_mask": attention[i][real].clone()})

    def summarize(self, records: list[Any]) -> dict[str, float]:
        require_records(records, "retrieval_recall")
        images = torch.stack([r["image"] for r in records])
        texts = torch.cat([r["texts"] for r in records])
        owners = torch.cat([torch.full((len(r["texts"]),), i, dtype=torch.long) for i, r in enumerate(records)])
        if self.rerank_k == 0:
            return retrieval_recall_at_k(images, texts, owners, self.ks, self.chunk_size)
        if self._scoring_model is None or not all("pixels" in r for r in records):
            raise ValueError("retrieval_recall: re-ranking needs the bound model and records collected "
                             "after bind_model(model); call bind_model before update")
        pixels = torch.stack([r["pixels"] for r in records])
        caption_ids = pad_stack([row for r in records for row in r["caption_ids"]])
        caption_mask = pad_stack([row for r in records for row in r["caption_mask"]])
        scorer = pair_scorer(self._scoring_model, pixels, caption_ids, caption_mask)
        # every rank holds all records (gather): each re-ranks its share of the queries
        shard = process_group()
        ranks = reranked_ranks(images, texts, owners, scorer, self.rerank_k, self.chunk_size, shard)
        text_ranks, image_ranks = merge_sharded_ranks(all_gather_object(ranks)) if shard[1] > 1 else ranks
        result = recall_from_ranks(text_ranks, image_ranks, self.ks)
        result["rerank_k"] = float(self.rerank_k)
        return result
