"""VLMo: a Mixture-of-Modality-Experts Transformer for vlfw (model `vlmo`, loss `vlmo_itc`,
metric alias `vlmo_retrieval_recall`)."""

from vlfw_vlmo.heads import VLMoEmbeddingHead  # noqa: F401  (registers the head)
from vlfw_vlmo.losses import VLMoContrastiveLoss  # noqa: F401  (registers the loss)
from vlfw_vlmo.metrics import VLMoRetrievalRecall  # noqa: F401  (registers the alias of retrieval_recall)
from vlfw_vlmo.model import VLMo  # noqa: F401  (registers the model)
from vlfw_vlmo.rerank import itm_rerank  # noqa: F401

__all__ = ["VLMo", "VLMoContrastiveLoss", "VLMoEmbeddingHead", "VLMoRetrievalRecall", "itm_rerank"]
