"""VL-BERT (Su et al., "VL-BERT: Pre-training of Generic Visual-Linguistic Representations",
ICLR 2020) as a vlfw plugin: the `vlbert` model and its `vlbert_*` task heads."""

from vlfw_vlbert.heads import VLBertRegionHead, VLBertVQAHead  # noqa: F401  (registers the heads)
from vlfw_vlbert.model import VLBert  # noqa: F401  (registers the model)

__all__ = ["VLBert", "VLBertVQAHead", "VLBertRegionHead"]
