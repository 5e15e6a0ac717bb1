"""FIBER: fusion in the backbone (Swin + BERT with gated cross-attention in their top layers) for vlfw:
model `fiber`, heads `fiber_embedding` / `fiber_grounding`, losses `fiber_itc` / `fiber_grounding`, the
fine-grained tasks `dense_rec` / `dense_grounding` with their datasets (`fiber_refcoco`, `fiber_refcoco_plus`,
`fiber_refcocog`, `fiber_flickr30k_entities`) and metrics (`predicted_box_rec_accuracy`,
`predicted_box_grounding_recall`)."""

from vlfw_fiber import dense, dense_data  # noqa: F401  (registers the fine-grained tasks, head, loss, metrics, datasets)
from vlfw_fiber.heads import FIBEREmbeddingHead  # noqa: F401  (registers the head)
from vlfw_fiber.losses import FIBERContrastiveLoss  # noqa: F401  (registers the loss)
from vlfw_fiber.model import FIBER  # noqa: F401  (registers the model)

__all__ = ["FIBER", "FIBERContrastiveLoss", "FIBEREmbeddingHead"]
