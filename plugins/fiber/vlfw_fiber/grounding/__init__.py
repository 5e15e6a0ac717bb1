"""FIBER's fine-grained stage: FPN + language-aware FCOS head for phrase grounding and REC."""

from .atss import ATSSAssigner, assign_atss, location_anchors
from .evaluation import (
    PredictedBoxGroundingRecall,
    PredictedBoxRECAccuracy,
    grounding_hits,
    grounding_recall,
    rec_accuracy,
    rec_hits,
)
from .fpn import FeaturePyramid
from .head import LanguageAwareDenseHead, level_locations
from .losses import decode_distances, grounding_losses, token_focal_loss
from .model import GroundingHead
from .postprocess import phrase_scores, predict_phrase_boxes, single_phrase_outputs
from .targets import (
    FCOSAssigner,
    LocationAssigner,
    assign_fcos,
    centerness_targets,
    expression_token_mask,
    fcos_scale_ranges,
    phrase_targets,
    rec_targets,
    span_positive_map,
)

__all__ = [
    "ATSSAssigner", "FCOSAssigner", "FeaturePyramid", "GroundingHead", "LanguageAwareDenseHead", "LocationAssigner",
    "PredictedBoxGroundingRecall", "PredictedBoxRECAccuracy", "assign_atss", "assign_fcos", "centerness_targets",
    "decode_distances", "expression_token_mask", "fcos_scale_ranges", "grounding_hits", "grounding_losses",
    "grounding_recall", "level_locations", "location_anchors", "phrase_scores", "phrase_targets",
    "predict_phrase_boxes", "rec_accuracy", "rec_hits", "rec_targets", "single_phrase_outputs", "span_positive_map",
    "token_focal_loss",
]
