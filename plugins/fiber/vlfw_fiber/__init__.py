"""FIBER: fusion in the backbone (Swin + BERT with gated cross-attention in their top layers) for vlfw:
model `fiber`, head `fiber_embedding`, loss `fiber_itc`."""

from vlfw_fiber.heads import FIBEREmbeddingHead  # noqa: F401  (registers the head)
from vlfw_fiber.losses import FIBERContrastiveLoss  # noqa: F401  (registers the loss)
from vlfw_fiber.model import FIBER  # noqa: F401  (registers the model)

__all__ = ["FIBER", "FIBERContrastiveLoss", "FIBEREmbeddingHead"]
