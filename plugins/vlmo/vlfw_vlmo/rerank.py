"""ITM re-ranking outside the evaluator, for tools: `itm_scores` of (image, caption) index pairs over
tensors in memory, and `itm_rerank` (the re-ranked top k index lists).

Retrieval evaluation does not need this module: VLMo implements vlfw's `PairScoringModel`
(`retrieval_rerank_k`, `retrieval_rerank_batch_size`, `score_pairs` = the ITM match score), and
the evaluator's re-rank step (vlfw.runner.rerank) applies it.
"""

from __future__ import annotations

import torch

from vlfw.data.batch import Batch
from vlfw.metrics.rerank import PairScorer


def _device_of(model) -> torch.device:
    first = next(iter(model.parameters()), None)
    return first.device if first is not None else torch.device("cpu")


@torch.no_grad()
def itm_scores(model, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
               image_index: torch.Tensor, text_index: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """ITM match score (logit of 'match' minus 'no match') of each (images[image_index[i]],
    input_ids[text_index[i]]), as a CPU float (n,). The pools may live on the CPU; each chunk of
    `batch_size` pairs moves to the model's device."""
    device = _device_of(model)
    scores = []
    for start in range(0, len(image_index), int(batch_size)):
        i = image_index[start:start + int(batch_size)]
        t = text_index[start:start + int(batch_size)]
        batch = Batch(image=images[i].to(device), input_ids=input_ids[t].to(device))
        if attention_mask is not None:
            batch["attention_mask"] = attention_mask[t].to(device)
        scores.append(model.score_pairs(batch).detach().float().reshape(-1).cpu())
    return torch.cat(scores) if scores else torch.empty(0)


def itm_scorer(model, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
               batch_size: int = 64) -> PairScorer:
    """A PairScorer (for vlfw.metrics.rerank.reranked_ranks) over these images (I, 3, H, W) and texts (T, L)."""
    return lambda image_index, text_index: itm_scores(model, images, input_ids, attention_mask,
                                                      image_index, text_index, batch_size)


@torch.no_grad()
def itm_rerank(model, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
               image_embeddings: torch.Tensor, text_embeddings: torch.Tensor, k: int = 16,
               batch_size: int = 64, chunk_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank with the dual encoder, then reorder each query's top k by the ITM head.

    images (I, 3, H, W), input_ids (T, L), embeddings (I, D) / (T, D). Returns
    (text->image ranking (T, k) image indices, image->text ranking (I, k) text indices), best first.
    Similarities are computed `chunk_size` query rows at a time (never the whole T x I matrix).
    """
    texts, pool_images = text_embeddings.float(), image_embeddings.float()

    def reorder(queries: torch.Tensor, pool: torch.Tensor, text_queries: bool) -> torch.Tensor:
        lists = []
        for start in range(0, len(queries), int(chunk_size)):
            sim = queries[start:start + int(chunk_size)] @ pool.t()
            candidates = sim.topk(min(k, sim.shape[1]), dim=1).indices
            owners = torch.arange(start, start + len(sim), device=sim.device)[:, None].expand_as(candidates).reshape(-1)
            pairs = (candidates.reshape(-1), owners) if text_queries else (owners, candidates.reshape(-1))
            score = itm_scores(model, images, input_ids, attention_mask, *pairs, batch_size=batch_size)
            order = score.view(candidates.shape).argsort(dim=1, descending=True).to(candidates.device)
            lists.append(candidates.gather(1, order))
        return torch.cat(lists)

    return reorder(texts, pool_images, True), reorder(pool_images, texts, False)
