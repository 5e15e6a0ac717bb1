"""The retrieval re-rank step of evaluation: the evaluator (never a metric) calls the model.

After a retrieval dataset's pass, the metric holds every image and caption embedding of the split
(records of indices and embeddings, gathered over ranks). When the evaluated model implements
`PairScoringModel` and asks for k > 0, this step re-scores each query's dual-encoder top k with
`model.score_pairs` on pairs it loads back from the dataset by index, splits that work over the
ranks, and hands the re-ranked ranks to the metric (`RetrievalRecall.set_ranks`). Images are
read from the dataset when a pair needs them, a few at a time: nothing holds the split's images.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Protocol, runtime_checkable

import torch

from vlfw.data.batch import Batch, Sample
from vlfw.distributed import all_gather_object, world
from vlfw.metrics.rerank import merge_sharded_ranks, reranked_ranks
from vlfw.metrics.retrieval import RetrievalPools

TEXT_FIELDS = ("input_ids", "token_type_ids", "attention_mask")


@runtime_checkable
class PairScoringModel(Protocol):
    """What a model implements to have its retrieval evaluation re-ranked (a duck type).

    `retrieval_rerank_k()`: how many of each query's dual-encoder candidates to re-score (0 = off).
    `retrieval_rerank_batch_size()`: at most this many pairs go into one `score_pairs` call.
    `score_pairs(batch)`: a collated Batch of n (image, caption) pairs on the model's device: the
    image sample's visual fields (`image`, or `region_features`/`region_boxes`/... ) and the
    caption's `input_ids`/`attention_mask` (n, L); returns the (n,) match scores, higher = better.
    Called in eval mode without gradients.
    """

    def retrieval_rerank_k(self) -> int: ...

    def retrieval_rerank_batch_size(self) -> int: ...

    def score_pairs(self, batch: Batch) -> torch.Tensor: ...


def rerank_k_of(model: object) -> int:
    """The model's re-rank k: 0 when it does not implement `PairScoringModel`."""
    if model is None or not isinstance(model, PairScoringModel):
        return 0
    k = model.retrieval_rerank_k()
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"{type(model).__name__}.retrieval_rerank_k() must return an int >= 0 (0 = off), got {k!r}")
    return k


class DatasetPairScorer:
    """(image positions (n,), caption positions (n,)) of `pools` -> `model.score_pairs` scores (n,).

    Pair samples are built from the dataset's own samples (loaded by index, the last
    `cache_size` kept), collated with the dataset's collate and scored `batch_size` at a time.
    """

    def __init__(self, model: PairScoringModel, dataset: Any, collate: Callable, pools: RetrievalPools,
                 device: torch.device, batch_size: int, autocast: Callable[[], Any], cache_size: int = 256) -> None:
        if int(batch_size) < 1:
            raise ValueError(f"re-rank batch size must be >= 1, got {batch_size}")
        self.model, self.dataset, self.collate, self.pools = model, dataset, collate, pools
        self.device, self.batch_size, self.autocast = device, int(batch_size), autocast
        self.cache_size = max(int(cache_size), 2 * self.batch_size)
        self._cache: OrderedDict[Any, Sample] = OrderedDict()
        self.pairs_scored = 0

    def sample(self, position: int) -> Sample:
        key = self.pools.image_keys[position]
        found = self._cache.get(key)
        if found is None:
            found = self.dataset[int(key)]
            self._cache[key] = found
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return found

    def pair(self, image_position: int, text_position: int) -> Sample:
        image = self.sample(image_position)
        owner = self.sample(int(self.pools.text_to_image[text_position]))
        slot = int(self.pools.text_slots[text_position])
        pair = Sample({k: v for k, v in image.items() if k not in TEXT_FIELDS and k != "text_mask"})
        for name in TEXT_FIELDS:
            if name in owner:
                pair[name] = owner[name][slot]
        return pair

    @torch.no_grad()
    def __call__(self, image_index: torch.Tensor, text_index: torch.Tensor) -> torch.Tensor:
        scores = []
        for start in range(0, len(image_index), self.batch_size):
            images = image_index[start:start + self.batch_size].tolist()
            texts = text_index[start:start + self.batch_size].tolist()
            batch = self.collate([self.pair(i, t) for i, t in zip(images, texts)]).to(self.device)
            with self.autocast():
                chunk = self.model.score_pairs(batch)
            scores.append(chunk.detach().float().reshape(-1).cpu())
            self.pairs_scored += len(images)
        return torch.cat(scores) if scores else torch.empty(0)


def rerank_retrieval(model: Any, dataset: Any, collate: Callable, metric: Any, device: torch.device,
                     autocast: Callable[[], Any]) -> int:
    """Re-rank `metric`'s gathered retrieval pools with `model` (every rank calls it); returns k.

    Each rank re-scores a contiguous share of the queries; the shares are gathered so that every
    rank hands the metric the same ranks. k = 0 (or a model without the protocol) does nothing.
    """
    k = rerank_k_of(model)
    if k == 0:
        return 0
    pools = metric.pools()
    scorer = DatasetPairScorer(model, dataset, collate, pools, device, model.retrieval_rerank_batch_size(), autocast)
    shard = world()
    ranks = reranked_ranks(pools.image_embeddings, pools.text_embeddings, pools.text_to_image, scorer, k,
                           chunk_size=metric.chunk_size, shard=shard)
    text_ranks, image_ranks = merge_sharded_ranks(all_gather_object(ranks)) if shard[1] > 1 else ranks
    metric.set_ranks(text_ranks, image_ranks, k)
    return k
