"""The retrieval head: VLMo projects with its own ITC projections, the head only normalises."""

from __future__ import annotations

import torch.nn.functional as F

from vlfw.modules.heads import Head
from vlfw.registry import HEADS


@HEADS.register("vlmo_embedding")
class VLMoEmbeddingHead(Head):
    """image_pooled / text_pooled (already ITC-projected by the model) -> L2-normalised embeddings.

    The projections live in the model so that pre-training ITC weights carry over to retrieval.
    """

    reads = ("image_pooled", "text_pooled")

    def forward(self, features, batch):
        outputs = {
            "image_embeddings": F.normalize(features["image_pooled"], dim=-1),
            "text_embeddings": F.normalize(features["text_pooled"], dim=-1),
        }
        if "logit_scale" in features:
            outputs["logit_scale"] = features["logit_scale"]
        return outputs
