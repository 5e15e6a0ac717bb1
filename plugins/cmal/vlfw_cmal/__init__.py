"""CMAL (Cross-Modal Associative Learning) for vlfw: model `cmal` (UMSE -> CMAP -> CMAI -> heads;
pre-training AMC, MLM, MRM, ITM, VTC; VQA, SNLI-VE, NLVR2, RefCOCO+ features), the pre-training
datasets `cmal_pretraining` and `cmal_amc` ... `cmal_vtc`, `cmal_coco_captions` (retrieval layout
with anchors) and the retrieval head `cmal_embedding`. See README.md."""

import vlfw.processors.anchors  # noqa: F401  (registers anchor_points until the core lists it in vlfw.components)
from vlfw_cmal.cmac import CrossModalAssociativeClassifier, CrossModalAssociativeInteraction, amc_loss, amc_targets
from vlfw_cmal.cmap import CrossModalAssociativePrompt, HybridSequence, scan_anchors
from vlfw_cmal.data import CmalCocoCaptionsBuilder, CmalPretrainingBuilder  # noqa: F401  (registers the datasets)
from vlfw_cmal.heads import AnswerDecoderHead, CmalEmbeddingHead  # noqa: F401  (registers the heads)
from vlfw_cmal.model import CMAL  # noqa: F401  (registers the model)
from vlfw_cmal.umse import TextualUMSE, VisualUMSE, box_geometry

__all__ = ["CMAL", "CmalCocoCaptionsBuilder", "CmalEmbeddingHead", "CmalPretrainingBuilder",
           "CrossModalAssociativeClassifier", "CrossModalAssociativeInteraction", "CrossModalAssociativePrompt",
           "HybridSequence", "TextualUMSE", "VisualUMSE", "amc_loss", "amc_targets", "box_geometry", "scan_anchors"]
