"""ITM re-ranking outside the evaluator: `itm_rerank` (the re-ranked top k index lists) and the
helpers tools use (`itm_scores`, `ITMReranker`).

Retrieval evaluation does not need this module: VLMo implements vlfw's `PairScoringModel`
(`retrieval_rerank_k`, `retrieval_rerank_batch_size`, `score_pairs` = the ITM match score), and
vlfw's `retrieval_recall` re-ranks with it (vlfw.metrics.rerank holds the algorithm).
"""

from __future__ import annotations

import torch

from vlfw.metrics.rerank import PairScorer, pair_scorer, score_pairs_in_chunks


@torch.no_grad()
def itm_scores(model, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
               image_index: torch.Tensor, text_index: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """ITM match score (logit of 'match' minus 'no match') of each (image_index[i], text_index[i]).

    Inputs may live on the CPU; each chunk of `batch_size` pairs moves to the model's device."""
    return score_pairs_in_chunks(model, images, input_ids, attention_mask, image_index, text_index, batch_size)


class ITMReranker:
    """An ITM re-rank's k and pair batch size, and its PairScorer over a pool of images and texts
    (for tools that call vlfw.metrics.rerank.reranked_ranks themselves)."""

    def __init__(self, model, k: int, batch_size: int = 64) -> None:
        self.model = model
        self.k = int(k)
        self.batch_size = int(batch_size)

    def scorer(self, images: torch.Tensor, input_ids: torch.Tensor,
               attention_mask: torch.Tensor | None) -> PairScorer:
        """A PairScorer over these images (I, 3, H, W) and texts (T, L)."""
        return pair_scorer(self.model, images, input_ids, attention_mask, self.batch_size)


@torch.no_grad()
def itm_rerank(model, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
               image_embeddings: torch.Tensor, text_embeddings: torch.Tensor, k: int = 16,
               batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank with the dual encoder, then reorder each query's top k by the ITM head.

    images (I, 3, H, W), input_ids (T, L), embeddings (I, D) / (T, D). Returns
    (text->image ranking (T, k) image indices, image->text ranking (I, k) text indices), best first.
    """
    similarity = text_embeddings.float() @ image_embeddings.float().t()  # (T, I)

    def reorder(sim: torch.Tensor, text_queries: bool) -> torch.Tensor:
        candidates = sim.topk(min(k, sim.shape[1]), dim=1).indices
        owners = torch.arange(len(sim), device=sim.device)[:, None].expand_as(candidates).reshape(-1)
        pairs = (candidates.reshape(-1), owners) if text_queries else (owners, candidates.reshape(-1))
        score = itm_scores(model, images, input_ids, attention_mask, *pairs, batch_size=batch_size)
        order = score.view(candidates.shape).argsort(dim=1, descending=True).to(candidates.device)
        return candidates.gather(1, order)

    return reorder(similarity, True), reorder(similarity.t(), False)
