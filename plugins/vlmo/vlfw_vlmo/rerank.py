"""Optional ITM re-ranking of the dual encoder's top k (the fusion encoder as a scorer), and the
retrieval ranks / recall of the re-ranked order.

The re-ranked order of one query's candidates is: the dual encoder's top k, reordered by the ITM
match score, then every other candidate in dual-encoder order. k = 0 is the dual encoder alone;
k >= the number of candidates is a brute-force ITM ranking of all of them. Cost: (T + I) x k
fused passes for T texts and I images instead of T x I.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

# (image_index (n,), text_index (n,)) -> match score (n,), higher = better match
PairScorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def itm_scores(model, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
               image_index: torch.Tensor, text_index: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """ITM match score (logit of 'match' minus 'no match') of each (image_index[i], text_index[i]).

    Inputs may live on the CPU; each chunk of `batch_size` pairs moves to the model's device."""
    device = next(model.parameters()).device
    scores = []
    for start in range(0, len(image_index), batch_size):
        i = image_index[start:start + batch_size]
        t = text_index[start:start + batch_size]
        mask = None if attention_mask is None else attention_mask[t].to(device)
        logits = model.itm_logits(images[i].to(device), input_ids[t].to(device), mask).float()
        scores.append((logits[:, 1] - logits[:, 0]).cpu())
    return torch.cat(scores) if scores else torch.empty(0)


class ITMReranker:
    """What a VLMo model hands the retrieval metric at evaluation: its ITM scorer and k."""

    def __init__(self, model, k: int, batch_size: int = 64) -> None:
        self.model = model
        self.k = int(k)
        self.batch_size = int(batch_size)

    def scorer(self, images: torch.Tensor, input_ids: torch.Tensor,
               attention_mask: torch.Tensor | None) -> PairScorer:
        """A PairScorer over these images (I, 3, H, W) and texts (T, L)."""
        return lambda image_index, text_index: itm_scores(self.model, images, input_ids, attention_mask,
                                                          image_index, text_index, self.batch_size)


def _as_float_cpu(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().float().cpu()


@torch.no_grad()
def reranked_ranks(image_embeddings: torch.Tensor, text_embeddings: torch.Tensor, text_to_image: torch.Tensor,
                   score_pairs: PairScorer | None, k: int, chunk_size: int = 256
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """0-based rank of the right answer of every query in the re-ranked order.

    text->image: the rank of the text's image; image->text: the rank of the image's best-placed
    caption. As in vlfw's retrieval_recall_at_k, a rank counts the candidates placed strictly
    before the answer, so exact ties resolve in the query's favour. Returns (text_ranks (T,),
    image_ranks (I,)).
    """
    images, texts = _as_float_cpu(image_embeddings), _as_float_cpu(text_embeddings)
    targets = torch.as_tensor(text_to_image, dtype=torch.long).reshape(-1).cpu()
    num_images, num_texts = images.shape[0], texts.shape[0]
    if targets.numel() != num_texts:
        raise ValueError(f"text_to_image has {targets.numel()} entries for {num_texts} texts")
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

    text_ranks = torch.empty(num_texts, dtype=torch.long)
    for start in range(0, num_texts, chunk_size):
        queries = torch.arange(start, min(start + chunk_size, num_texts))
        own = torch.arange(num_images)[None, :] == targets[queries][:, None]
        text_ranks[queries] = ranks(texts[queries] @ images.T, own, queries, text_queries=True)
    image_ranks = torch.empty(num_images, dtype=torch.long)
    for start in range(0, num_images, chunk_size):
        queries = torch.arange(start, min(start + chunk_size, num_images))
        own = targets[None, :] == queries[:, None]
        image_ranks[queries] = ranks(images[queries] @ texts.T, own, queries, text_queries=False)
    return text_ranks, image_ranks


def recall_from_ranks(text_ranks: torch.Tensor, image_ranks: torch.Tensor,
                      ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Recall@K (x100) with vlfw's names: ir_r<k> (text->image), tr_r<k> (image->text), r_mean."""
    result: dict[str, float] = {}
    for k in ks:
        result[f"ir_r{int(k)}"] = 100.0 * float((text_ranks < int(k)).double().mean())
    for k in ks:
        result[f"tr_r{int(k)}"] = 100.0 * float((image_ranks < int(k)).double().mean())
    result["r_mean"] = sum(result.values()) / len(result)
    return result


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
