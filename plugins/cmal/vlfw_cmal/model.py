"""The CMAL model: UMSE (one visual and one textual Transformer layer) -> CMAP (the hybrid
sequence, anchors masked and swapped in pre-training) -> CMAI (the Transformer) -> heads.

Tasks: `pretraining` (AMC, MLM, MRM, ITM, VTC; objectives.py), `vqa` / `classification`
(`pooled`: the pooled CMAI [CLS]), `nlvr2` (`pooled_pair`: one pass per image, concatenated),
`rec` (`region_states`: the CMAI states of the region slots) and `retrieval` (the UMSE [IMG] /
[TXT] states, as VTC compares them). Downstream passes build the plain sequence (no anchor)."""

from __future__ import annotations

import logging
from typing import Mapping

import torch
from torch import nn

from vlfw.data.batch import Batch
from vlfw.errors import ConfigError
from vlfw.models.base import BaseModel, provides
from vlfw.modules.encoders import RegionFeatureNorm
from vlfw.registry import MODELS
from vlfw.tasks import TaskInfo, text_settings
from vlfw_cmal.cmac import CrossModalAssociativeClassifier, CrossModalAssociativeInteraction
from vlfw_cmal.cmap import CrossModalAssociativePrompt, HybridSequence
from vlfw_cmal.config import CONFIG_CHOICES, DEFAULT_CONFIG, OBJECTIVES, check_gamma, resolve_init_std, resolve_sizes
from vlfw_cmal.objectives import MaskedLanguageModelHead, PretrainingObjectives, VisionTextContrastHead
from vlfw_cmal.umse import TextualUMSE, VisualUMSE

log = logging.getLogger(__name__)

UMSE = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # visual, visual mask, text, text mask


@MODELS.register("cmal")
class CMAL(PretrainingObjectives, BaseModel):
    """CMAL on region features (plugins/cmal/README.md: what follows the paper, what the released code)."""

    DEFAULT_CONFIG = DEFAULT_CONFIG
    CONFIG_CHOICES = CONFIG_CHOICES
    TASK_HEADS = {"retrieval": "cmal_embedding"}
    VISUAL_INPUTS = ("regions",)
    CARD_CONFIG = {"bert_init": "none"}

    def __init__(self, config, task_infos: Mapping[str, TaskInfo]) -> None:
        super().__init__(config, task_infos)
        c = self.config
        self.sizes = sizes = resolve_sizes(c)
        hidden, layers, heads, ffn = (sizes[k] for k in ("hidden_size", "num_layers", "num_heads", "intermediate_size"))
        self.hidden_size = hidden
        dropout, eps = float(c.dropout), float(c.layer_norm_eps)
        vocab_size, self.pad_id = text_settings(self.task_infos, c.vocab_size)
        self.vocab_size = vocab_size
        not_regions = sorted(d for d, i in self.task_infos.items() if i.visual not in ("regions", None))
        if not_regions:
            raise ConfigError(f"cmal works on region features: set dataset_config.<d>.visual=regions for {not_regions}")
        feature_sizes = {int(i.region_feature_size) for i in self.task_infos.values() if i.region_feature_size}
        if c.region_feature_size is not None:
            feature_sizes = {int(c.region_feature_size)}
        if len(feature_sizes) > 1:
            raise ConfigError(f"cmal: the datasets give different region feature sizes {sorted(feature_sizes)}")
        self.region_norm = RegionFeatureNorm(self.task_infos)
        umse = bool(c.umse)
        self.visual = VisualUMSE(feature_sizes.pop() if feature_sizes else 2048, hidden, heads, ffn, dropout, eps,
                                 transformer=umse)
        self.text = TextualUMSE(vocab_size, hidden, heads, int(c.max_text_length), ffn, dropout, eps, pad_id=self.pad_id,
                                transformer=umse)
        cmap = c.cmap
        self.cmap = CrossModalAssociativePrompt(hidden, int(c.max_positions), float(cmap.mask_probability),
                                                float(cmap.swap_probability), str(cmap.scan),
                                                cmap.max_anchors_per_sample, dropout, eps)
        self.cmai = CrossModalAssociativeInteraction(hidden, layers, heads, ffn, dropout, eps)
        self.pooler = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh())
        self._build_pretraining_heads(hidden, eps)
        self.heads = self.build_heads(hidden, dict(c.heads or {}), head_defaults={"dropout": dropout})
        self.init_std = resolve_init_std(c)
        self.apply(self._init_module)
        self.bert_report = self._load_bert()

    # -- building ---------------------------------------------------------------------------
    def _build_pretraining_heads(self, hidden: int, eps: float) -> None:
        """Only the heads the run's pre-training datasets train (DDP needs every parameter used)."""
        pre = self.config.pretraining
        self.gamma = check_gamma(pre.gamma)
        switched_on = {o for o in OBJECTIVES if bool(pre[o])}
        self.dataset_objectives: dict[str, tuple[str, ...]] = {}
        for dataset, info in self.task_infos.items():
            if info.task != "pretraining":
                continue
            asked = tuple(info.extra.get("cmal_objectives", OBJECTIVES))
            kept = tuple(o for o in asked if o in switched_on)
            if not kept:
                raise ConfigError(f"cmal: dataset {dataset!r} trains {', '.join(asked)}, which "
                                  f"model_config.cmal.pretraining turns off; drop the dataset or turn one on")
            self.dataset_objectives[dataset] = kept
        used = {o for kept in self.dataset_objectives.values() for o in kept}
        if "amc" in used and str(pre.anchor_free) == "mlm" and "mlm" in switched_on:
            used.add("mlm")  # an anchor-free AMC batch trains MLM
        classes = self.config.detector_classes
        if classes is None:
            found = [int(i.detector_classes) for i in self.task_infos.values() if i.detector_classes]
            classes = max(found) if found else None
        if {"amc", "mrm"} & used and not classes:
            raise ConfigError("cmal: AMC and MRM classify regions over the detector's classes, but the datasets carry "
                              "no class scores; use features.format=npy (or set model_config.cmal.detector_classes)")
        if "amc" in used:
            self.cmac = CrossModalAssociativeClassifier(hidden, self.vocab_size, int(classes), eps)
        if "mlm" in used:
            self.mlm = MaskedLanguageModelHead(hidden, self.text.words, eps)
        if "mrm" in used:
            self.mrm = nn.Linear(hidden, int(classes))
        if "itm" in used:
            self.itm = nn.Linear(hidden, 1)
        if "vtc" in used or any(i.task == "retrieval" for i in self.task_infos.values()):
            self.vtc = VisionTextContrastHead(hidden, pre.vtc_projection_size, float(pre.vtc_temperature),
                                              bool(pre.vtc_learn_temperature))
        self.register_buffer("objective_step", torch.zeros((), dtype=torch.long))

    def _init_module(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.init_std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
            if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def _load_bert(self) -> dict[str, list[str]] | None:
        from vlfw_cmal.pretrained import bundled_bert_path, load_bert

        mode, path = str(self.config.bert_init), self.config.bert_path
        if mode == "none":
            return None
        if mode == "bundled" or (mode == "auto" and path is None and str(self.config.size) == "small"):
            path = bundled_bert_path()
        elif path is None:
            if mode == "path":
                raise ConfigError("model_config.cmal.bert_init=path needs model_config.cmal.bert_path")
            return None
        return load_bert(self, str(path))

    def pretrained_key_map(self) -> dict[str, str]:
        return {"module.": ""}

    # -- the three stages -------------------------------------------------------------------
    def umse(self, batch: Batch, input_ids: torch.Tensor, hidden_regions: torch.Tensor | None = None,
             visual_key: str = "region_features") -> UMSE:
        """Both UMSE encoders: (visual (B, 1 + N, H), its mask, text (B, L, H), its mask).
        `hidden_regions` (B, N) bool: those regions' (normalised) features are zeroed (MRM)."""
        if visual_key not in batch:
            raise ConfigError(f"cmal needs region features (batch of {batch.dataset_name!r} has no {visual_key}): "
                              "set the dataset's visual: regions")
        features = self.region_norm(batch[visual_key], batch.dataset_name)
        if hidden_regions is not None:
            features = features.masked_fill(hidden_regions[..., None].to(features.device), 0.0)
        visual, visual_mask = self.visual(features, batch.region_boxes, batch.image_size, batch.get("region_mask"))
        text, text_mask = self.text(input_ids, self._text_mask(input_ids, batch.get("attention_mask")))
        return visual, visual_mask, text, text_mask

    def _text_mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        mask = input_ids != self.pad_id
        if attention_mask is not None:
            mask = mask & attention_mask.bool()
        mask = mask.clone()
        mask[:, 0] = True  # [TXT] always attends: an all-padding caption stays finite
        return mask

    def fuse(self, visual: torch.Tensor, visual_mask: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor,
             batch: Batch | None = None, scan: str | None = "none", generator: torch.Generator | None = None
             ) -> tuple[HybridSequence, torch.Tensor]:
        """CMAP then CMAI: (the hybrid sequence, CMAI states (R, S, H)). scan None: the configured
        anchor scan over the batch's anchors; "none": the plain sequence."""
        anchors = {}
        if scan != "none" and batch is not None:
            anchors = {k: batch.get(k) for k in ("anchor_region_index", "anchor_token_index", "anchor_token_mask",
                                                 "anchor_mask")}
        hybrid = self.cmap(visual, visual_mask, text, text_mask, **anchors, scan=scan, generator=generator)
        return hybrid, self.cmai(hybrid.embeddings, hybrid.mask)

    def encode(self, batch: Batch, visual_key: str = "region_features") -> tuple[HybridSequence, torch.Tensor]:
        """The plain (anchor-free) hybrid sequence of a downstream batch through CMAI."""
        return self.fuse(*self.umse(batch, batch.input_ids, visual_key=visual_key), batch=batch, scan="none")

    # -- tasks ------------------------------------------------------------------------------
    @provides("pretraining")
    def pretraining_losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The batch's objectives, unweighted (loss/amc_word, loss/amc_region, loss/mlm, loss/mrm,
        loss/itm, loss/vtc); dataset_config.<d>.loss_weights or multitask.ratios carry gamma."""
        return self.pretrain(batch)

    @provides("classification", features=("pooled",))
    def pooled_features(self, batch: Batch) -> dict[str, torch.Tensor]:
        _, states = self.encode(batch)
        return {"pooled": self.pooler(states[:, 0])}

    @provides("vqa", features=("pooled", "fused_states", "fused_mask"))
    def vqa_features(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The pooled [CLS] (the classifier head) and every CMAI state with its mask (the answer decoder)."""
        hybrid, states = self.encode(batch)
        return {"pooled": self.pooler(states[:, 0]), "fused_states": states, "fused_mask": hybrid.mask}

    @provides("nlvr2", features=("pooled_pair",))
    def pair_features(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Each image with the sentence through CMAI (one batched pass), the two pooled [CLS] concatenated."""
        size = batch.input_ids.shape[0]
        flat = lambda t: None if t is None else t.reshape(-1, *t.shape[2:])  # noqa: E731  (B, 2, ...) -> (2B, ...)
        twice = lambda t: None if t is None else t.repeat_interleave(2, dim=0)  # noqa: E731
        pairs = Batch({"region_features": flat(batch.region_features), "region_boxes": flat(batch.region_boxes),
                       "image_size": flat(batch.image_size), "input_ids": twice(batch.input_ids),
                       "dataset_name": batch.dataset_name})
        if batch.get("region_mask") is not None:
            pairs.region_mask = flat(batch.region_mask)
        if batch.get("attention_mask") is not None:
            pairs.attention_mask = twice(batch.attention_mask)
        _, states = self.encode(pairs)
        return {"pooled_pair": self.pooler(states[:, 0]).reshape(size, -1)}

    @provides("rec", "grounding", features=("region_states", "pooled"))
    def region_features(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The CMAI states of the region slots (one per candidate region) and the pooled [CLS]."""
        hybrid, states = self.encode(batch)
        return {"region_states": states[:, hybrid.region_slots()], "pooled": self.pooler(states[:, 0])}

    @provides("retrieval", features=("image_pooled", "text_pooled"))
    def retrieval_features(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The UMSE [IMG] and [TXT] states (VTC's); (B, K, L) captions give (B, K, H)."""
        features = self.region_norm(batch.region_features, batch.dataset_name)
        visual, _ = self.visual(features, batch.region_boxes, batch.image_size, batch.get("region_mask"))
        ids = batch.input_ids
        lead = ids.shape[:-1]
        flat_ids = ids.reshape(-1, ids.shape[-1])
        mask = batch.get("attention_mask")
        mask = None if mask is None else mask.reshape(flat_ids.shape)
        text, _ = self.text(flat_ids, self._text_mask(flat_ids, mask))
        image, text = self.vtc(visual[:, 0], text[:, 0])
        return {"image_pooled": image, "text_pooled": text.reshape(*lead, -1)}
