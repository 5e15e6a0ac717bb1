"""`vlmo_retrieval_recall`: an alias of vlfw's `retrieval_recall`, kept so that configs naming it
keep working. The ITM re-rank (`model_config.vlmo.retrieval.rerank_k > 0`) is applied by vlfw's
metric itself: VLMo implements `vlfw.metrics.rerank.PairScoringModel`.
"""

from __future__ import annotations

from vlfw.metrics.retrieval import RetrievalRecall
from vlfw.registry import METRICS


@METRICS.register("vlmo_retrieval_recall")
class VLMoRetrievalRecall(RetrievalRecall):
    """Exactly `retrieval_recall` (ir_r<k>, tr_r<k>, r_mean; plus rerank_k when re-ranked). Params: ks, chunk_size."""
