"""`vlmo_retrieval_recall`: vlfw's retrieval recall, on the ITM re-ranked order when the model asks.

A VLMo model with `model_config.vlmo.retrieval.rerank_k > 0` returns, at evaluation, an
`itm_reranker` output next to its dual-encoder embeddings. This metric then keeps each image's
pixels and captions with its embeddings and, once every record is in (gathered over ranks),
re-orders each query's dual-encoder top k by the model's ITM head. Without that output it is
exactly `retrieval_recall`.

Why a metric of its own: vlfw's metrics do not see the model, and the core evaluator has no hook
through which a model could re-score the ranking, so the model hands its scorer over in its
outputs (see the plugin README: the core change that would make this unnecessary).
"""

from __future__ import annotations

from typing import Any

import torch

from vlfw.data.batch import pad_stack
from vlfw.metrics.common import output, require_records, sample_keys
from vlfw.metrics.retrieval import RetrievalRecall
from vlfw.registry import METRICS

from vlfw_vlmo.rerank import ITMReranker, recall_from_ranks, reranked_ranks


@METRICS.register("vlmo_retrieval_recall")
class VLMoRetrievalRecall(RetrievalRecall):
    """Recall@K both ways (ir_r<k>, tr_r<k>, r_mean) of the dual encoder, ITM re-ranked when the
    model's outputs carry `itm_reranker`; then also reports `rerank_k`. Params: ks, chunk_size."""

    def reset(self) -> None:
        super().reset()
        self.reranker: ITMReranker | None = None

    def update(self, batch, outputs: dict[str, Any]) -> None:
        reranker = outputs.get("itm_reranker")
        if reranker is None or reranker.k == 0:
            super().update(batch, outputs)
            return
        self.reranker = reranker
        images = output(outputs, "image_embeddings", "vlmo_retrieval_recall").detach().float().cpu()
        texts = output(outputs, "text_embeddings", "vlmo_retrieval_recall").detach().float().cpu()
        if texts.dim() != 3:
            raise ValueError("vlmo_retrieval_recall: text_embeddings must be (B, K, D) at evaluation, "
                             f"got shape {tuple(texts.shape)}")
        ids = batch.input_ids
        attention = batch.get("attention_mask")
        attention = torch.ones_like(ids) if attention is None else attention
        mask = batch.get("text_mask")
        mask = (torch.ones(texts.shape[:2], dtype=torch.bool) if mask is None
                else torch.as_tensor(mask, dtype=torch.bool).cpu())
        for i, key in enumerate(sample_keys(batch)):
            real = mask[i]
            self.add(key, {"image": images[i].clone(), "texts": texts[i][real].clone(),
                           "pixels": batch.image[i].detach().cpu().clone(),
                           "caption_ids": ids[i].cpu()[real].clone(),
                           "caption_mask": attention[i].cpu()[real].clone()})

    def summarize(self, records: list[Any]) -> dict[str, float]:
        require_records(records, "vlmo_retrieval_recall")
        if self.reranker is None or "pixels" not in records[0]:
            return super().summarize(records)
        images = torch.stack([r["image"] for r in records])
        texts = torch.cat([r["texts"] for r in records])
        owners = torch.cat([torch.full((len(r["texts"]),), i, dtype=torch.long) for i, r in enumerate(records)])
        pixels = torch.stack([r["pixels"] for r in records])
        caption_ids = pad_stack([row for r in records for row in r["caption_ids"]])
        caption_mask = pad_stack([row for r in records for row in r["caption_mask"]])
        scorer = self.reranker.scorer(pixels, caption_ids, caption_mask)
        text_ranks, image_ranks = reranked_ranks(images, texts, owners, scorer, self.reranker.k, self.chunk_size)
        result = recall_from_ranks(text_ranks, image_ranks, self.ks)
        result["rerank_k"] = float(self.reranker.k)
        return result

