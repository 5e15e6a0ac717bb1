"""The core's baselines: a text-only (blind) model and a small late-fusion model.

They make the runner testable without a paper plugin and give every benchmark its blind and
simple baselines. Late fusion: a small CNN (images) or an MLP (region features) and a small
text Transformer encode each modality on its own; an MLP over [t, v, t*v] fuses them.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from vlfw.data.batch import Batch
from vlfw.errors import ConfigError
from vlfw.models.base import BaseModel, provides
from vlfw.modules.encoders import RegionEncoder, RegionFeatureNorm, SmallCNN, TextEncoder
from vlfw.registry import MODELS
from vlfw.tasks import TaskInfo, text_settings

_DEFAULTS = {
    "hidden_size": 128,
    "vocab_size": None,  # null: the datasets' tokenizer (TaskInfo.text.vocab_size)
    "text_layers": 2,
    "text_heads": 4,
    "max_text_length": 64,
    "cnn_channels": [32, 64, 96, 128],
    "cnn_grid": 4,  # pooled image vector = the feature map pooled to 4 x 4 (0: global mean)
    "region_feature_size": 256,  # overridden by the dataset's task_info when it says
    "dropout": 0.1,
    "heads": {},
}


class _Fusion(nn.Module):
    def __init__(self, hidden_size: int, dropout: float) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(3 * hidden_size, hidden_size), nn.LayerNorm(hidden_size),
                                 nn.GELU(), nn.Dropout(dropout))

    def forward(self, text: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.cat([text, visual, text * visual], dim=-1))


@MODELS.register("late_fusion")
class LateFusionModel(BaseModel):
    """Small CNN or region MLP + small text Transformer + MLP fusion."""

    DEFAULT_CONFIG = _DEFAULTS
    VISUAL_INPUTS = ("images", "regions")
    uses_vision = True

    def __init__(self, config, task_infos: Mapping[str, TaskInfo]) -> None:
        super().__init__(config, task_infos)
        c = self.config
        hidden = int(c.hidden_size)
        vocab_size, pad_id = text_settings(self.task_infos, c.vocab_size)
        self.text_encoder = TextEncoder(vocab_size, hidden, int(c.text_layers), int(c.text_heads),
                                        int(c.max_text_length), float(c.dropout), pad_id=pad_id)
        if self.uses_vision:
            feature_sizes = {int(i.region_feature_size) for i in self.task_infos.values() if i.region_feature_size}
            if len(feature_sizes) > 1:
                raise ConfigError(f"datasets in one run give different region feature sizes: {sorted(feature_sizes)}")
            feature_size = feature_sizes.pop() if feature_sizes else int(c.region_feature_size)
            # only the encoders the datasets need: DDP requires every parameter to get a gradient
            visuals = {info.visual or "images" for info in self.task_infos.values()}
            region_tasks = {info.task for info in self.task_infos.values()} & {"rec", "grounding"}
            if "images" in visuals:
                self.image_encoder = SmallCNN(hidden, tuple(int(x) for x in c.cnn_channels),
                                              with_regions=bool(region_tasks), grid=int(c.cnn_grid))
            if "regions" in visuals:
                self.region_norm = RegionFeatureNorm(self.task_infos)
                self.region_encoder = RegionEncoder(feature_size, hidden, float(c.dropout))
            self.fusion = _Fusion(hidden, float(c.dropout))
        self.heads = self.build_heads(hidden, c.heads, head_defaults={"dropout": float(c.dropout)})

    # -- encoders --------------------------------------------------------------------------
    def encode_text(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.text_encoder(input_ids, mask)[1]

    def encode_visual(self, batch: Batch, boxes: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(pooled (B, [P,] H), region states (B, [P,] N, H) or None); P = images per sample."""
        if "image" in batch:
            images = batch.image
            lead = images.shape[:-3]
            fmap, pooled = self.image_encoder(images.reshape(-1, *images.shape[-3:]))
            regions = None
            if boxes is not None:
                regions = self.image_encoder.regions(fmap, boxes.reshape(-1, *boxes.shape[-2:]))
                regions = regions.view(*lead, *regions.shape[-2:])
            return pooled.view(*lead, -1), regions
        if "region_features" in batch:
            feats = self.region_norm(batch.region_features, batch.dataset_name)
            lead = feats.shape[:-2]
            flat = lambda t, keep: t.reshape(-1, *t.shape[len(lead):]) if t is not None else None  # noqa: E731
            sizes = batch.image_size.reshape(-1, 2)
            states, pooled = self.region_encoder(flat(feats, 2), flat(batch.region_boxes, 2), sizes,
                                                 flat(batch.get("region_mask"), 1))
            return pooled.view(*lead, -1), states.view(*lead, *states.shape[-2:])
        raise ConfigError("late_fusion needs `image` or `region_features` in the batch")

    def encode_choices(self, batch: Batch) -> dict[str, torch.Tensor]:
        """VCR: pooled text of each answer choice and, when present, each rationale (B, 4, H)."""
        return {kind: self.encode_text(batch[f"{kind}_input_ids"], batch[f"{kind}_attention_mask"])
                for kind in ("answer", "rationale") if f"{kind}_input_ids" in batch}

    # -- per task ----------------------------------------------------------------------------
    @provides("retrieval", features=("image_pooled", "text_pooled"))
    def retrieval_features(self, batch: Batch) -> dict[str, torch.Tensor]:
        visual, _ = self.encode_visual(batch)
        return {"image_pooled": visual, "text_pooled": self.encode_text(batch.input_ids, batch.attention_mask)}

    @provides("vcr", features=("answer_pooled", "rationale_pooled"))
    def vcr_features(self, batch: Batch) -> dict[str, torch.Tensor]:
        visual, _ = self.encode_visual(batch)
        return {f"{kind}_pooled": self.fusion(choices, visual[:, None].expand_as(choices))
                for kind, choices in self.encode_choices(batch).items()}

    @provides("rec", "grounding", features=("region_states",))
    def region_features(self, batch: Batch) -> dict[str, torch.Tensor]:
        t = self.encode_text(batch.input_ids, batch.attention_mask)
        _, regions = self.encode_visual(batch, batch.region_boxes if "image" in batch else None)
        return {"region_states": self.fusion(t[:, None].expand_as(regions), regions)}

    @provides("nlvr2", features=("pooled_pair",))
    def pair_features(self, batch: Batch) -> dict[str, torch.Tensor]:
        t = self.encode_text(batch.input_ids, batch.attention_mask)
        visual, _ = self.encode_visual(batch)
        return {"pooled_pair": self.fusion(t[:, None].expand_as(visual), visual).flatten(1)}

    @provides("vqa", "classification", features=("pooled",))
    def pooled_features(self, batch: Batch) -> dict[str, torch.Tensor]:
        t = self.encode_text(batch.input_ids, batch.attention_mask)
        visual, _ = self.encode_visual(batch)
        return {"pooled": self.fusion(t, visual)}


@MODELS.register("text_only")
class TextOnlyModel(LateFusionModel):
    """The blind baseline: the same text encoder and heads, no visual input at all."""

    VISUAL_INPUTS = ()
    uses_vision = False

    @provides("vcr", features=("answer_pooled", "rationale_pooled"))
    def vcr_features(self, batch: Batch) -> dict[str, torch.Tensor]:
        return {f"{kind}_pooled": pooled for kind, pooled in self.encode_choices(batch).items()}

    @provides("nlvr2", features=("pooled_pair",))
    def pair_features(self, batch: Batch) -> dict[str, torch.Tensor]:
        t = self.encode_text(batch.input_ids, batch.attention_mask)
        return {"pooled_pair": torch.cat([t, t], dim=-1)}

    @provides("vqa", "classification", features=("pooled",))
    def pooled_features(self, batch: Batch) -> dict[str, torch.Tensor]:
        return {"pooled": self.encode_text(batch.input_ids, batch.attention_mask)}

    # a blind model cannot point at regions or embed images
    retrieval_features = region_features = None  # type: ignore[assignment]
