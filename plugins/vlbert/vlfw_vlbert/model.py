"""The VL-BERT model: single-stream Transformer over text and RoIs, pre-training objectives and
per-dataset fine-tuning heads."""

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
from vlfw_vlbert.bert_init import bundled_bert_path, check_sizes, load_bert
from vlfw_vlbert.config import CONFIG_CHOICES, DEFAULT_CONFIG, VLBERT_HEADS, init_std, resolve_size
from vlfw_vlbert.embeddings import Embeddings
from vlfw_vlbert.encoder import Encoder, Pooler, gather_rows
from vlfw_vlbert.heads import MLMHead, MRCHead
from vlfw_vlbert.objectives import PretrainingObjectives
from vlfw_vlbert.vcr import VCRFeatures
from vlfw_vlbert.visual import (
    ResNetRoIExtractor,
    VisualFeatures,
    box_iou_rows,
    boxes_valid,
    whole_image_box,
    zero_masked_pixels,
)

log = logging.getLogger(__name__)

TRANSFORM_KEYS = ("dense.weight", "dense.bias", "LayerNorm.weight", "LayerNorm.bias")


def special_ids(task_infos: Mapping[str, TaskInfo]) -> dict[str, int]:
    """[CLS], [SEP] and [MASK] ids of the datasets' tokenizer (BERT's when no dataset has text)."""
    texts = {info.text for info in task_infos.values() if info.text is not None}
    if not texts:
        return {"cls": 101, "sep": 102, "mask": 103}
    if len({(t.cls_id, t.sep_id, t.mask_id) for t in texts}) > 1:
        raise ConfigError("vlbert: the datasets of this run use tokenizers with different special ids")
    text = texts.pop()
    if text.mask_id is None:
        raise ConfigError("vlbert: the tokenizer has no mask token (VQA reads the answer at a [MASK])")
    return {"cls": text.cls_id, "sep": text.sep_id, "mask": text.mask_id}


class Visual:
    """Projected visual elements of a batch: element 0 is the whole image; builder region k is
    element k + offset."""

    def __init__(self, features: torch.Tensor, valid: torch.Tensor, boxes: torch.Tensor, offset: int,
                 masked: torch.Tensor) -> None:
        self.features, self.valid, self.boxes, self.offset, self.masked = features, valid, boxes, offset, masked

    def select(self, index: torch.Tensor) -> "Visual":
        return Visual(self.features[index], self.valid[index], self.boxes[index], self.offset, self.masked[index])

    def repeat(self, k: int) -> "Visual":
        return self.select(torch.arange(self.features.shape[0], device=self.features.device).repeat_interleave(k))


@MODELS.register("vlbert")
class VLBert(PretrainingObjectives, VCRFeatures, BaseModel):
    """VL-BERT. See the plugin README for where it follows the paper and the released code."""

    DEFAULT_CONFIG = DEFAULT_CONFIG
    CONFIG_CHOICES = CONFIG_CHOICES
    TASK_HEADS = VLBERT_HEADS
    VISUAL_INPUTS = ("regions", "images")  # precomputed region features, or end to end with the ResNet
    CARD_CONFIG = {"bert_init": "none"}

    def __init__(self, config, task_infos: Mapping[str, TaskInfo]) -> None:
        super().__init__(config, task_infos)
        task_infos = self.task_infos
        c = self.config
        sizes = resolve_size(c)
        self.sizes = sizes
        hidden = sizes["hidden_size"]
        self.hidden_size = hidden
        vocab_size, self.pad_id = text_settings(task_infos, c.vocab_size)
        self.special = special_ids(task_infos)
        self.embeddings = Embeddings(vocab_size, hidden, int(c.max_position_embeddings), float(c.dropout),
                                     pad_id=self.pad_id)
        self.encoder = Encoder(hidden, sizes["num_layers"], sizes["num_heads"], sizes["intermediate_size"],
                               float(c.dropout), float(c.attention_dropout))
        self.pooler = Pooler(hidden)
        self.mlm = MLMHead(hidden, self.embeddings.word_embeddings)

        # appearance: precomputed region features and / or the end-to-end ResNet
        visuals = {info.visual for info in task_infos.values()}
        end_to_end = c.end_to_end
        build_images = bool(end_to_end) if end_to_end != "auto" else ("images" in visuals or None in visuals)
        geometry = (int(c.geometry_size), float(c.geometry_wavelength))
        if build_images:
            self.backbone = ResNetRoIExtractor(str(sizes["backbone"]), int(c.roi_output_size), bool(c.frozen_batch_norm))
            self.image_visual = VisualFeatures(self.backbone.out_channels, hidden, *geometry)
        if "regions" in visuals or None in visuals or not build_images:
            feature_sizes = {int(i.region_feature_size) for i in task_infos.values() if i.region_feature_size}
            if c.region_feature_size is not None:
                feature_sizes = {int(c.region_feature_size)}
            if len(feature_sizes) > 1:
                raise ConfigError(f"vlbert: datasets give different region feature sizes {sorted(feature_sizes)}")
            self.region_visual = VisualFeatures(feature_sizes.pop() if feature_sizes else 2048, hidden, *geometry)
        # z-scores precomputed region features with the train split's statistics (features.normalize)
        self.region_norm = RegionFeatureNorm(task_infos)

        # pre-training heads
        pre = c.pretraining
        pretraining = any(i.task == "pretraining" for i in task_infos.values())
        classes = c.detector_classes
        if classes is None:
            found = [int(i.detector_classes) for i in task_infos.values() if i.detector_classes]
            classes = max(found) if found else None
        # VCR's auxiliary RoI classification shares the masked-RoI-classification head
        vcr_config = c.vcr
        vcr_roi = bool(vcr_config.roi_classification) and any(i.task == "vcr" for i in task_infos.values())
        names = list(vcr_config.object_classes) if vcr_config.object_classes is not None else None
        if vcr_roi and names is not None:
            if classes is not None and int(classes) != len(names):
                raise ConfigError(f"model_config.vlbert.vcr.object_classes has {len(names)} names but the detector has "
                                  f"{classes} classes; the RoI classification head is shared: give one name per class")
            classes = classes or len(names)
        self.object_class_index = {str(n): i for i, n in enumerate(names)} if names is not None else {}
        self.mrc = MRCHead(hidden, int(classes)) if classes and ((pretraining and pre.mrc) or vcr_roi) else None
        if pretraining and pre.mrc and not classes:
            log.info("vlbert: no detector class distribution (task_info detector_classes): masked RoI "
                     "classification is off; use region features with class probabilities (features.format=npy)")
        if vcr_roi and not classes:
            log.info("vlbert: VCR auxiliary RoI classification is off: no class targets (use region features with "
                     "class probabilities, features.format=npy, or set model_config.vlbert.vcr.object_classes)")
        self.sir = nn.Linear(hidden, 2) if pretraining and pre.sir else None
        self.register_buffer("mask_step", torch.zeros((), dtype=torch.long))

        self.heads = self.build_heads(hidden, {k: dict(v) for k, v in (c.heads or {}).items()})

        self._init_weights()
        self.bert_report = self._load_bert()
        gains = self.config.visual_gain_init
        objects = gains.objects
        if objects == "auto":
            objects = 0.0 if self.bert_report is not None else 1.0
        for key, value in (("text", gains.text), ("objects", objects)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"model_config.vlbert.visual_gain_init.{key} must be a number"
                                  f"{' or auto' if key == 'objects' else ''}, got {value!r}")
        self.embeddings.init_visual_gain(float(gains.text), float(objects))
        self._copy_mlm_transform_into_heads()
        self.register_load_state_dict_pre_hook(self._copy_mlm_transform)
        self.register_load_state_dict_pre_hook(self._raw_features_checkpoint)

    # -- initialisation ---------------------------------------------------------------------------
    def _init_weights(self) -> None:
        std = init_std(self.config)
        for name, module in self.named_modules():
            if name.startswith("backbone"):
                continue  # torchvision's own initialisation
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=std)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        for param in (self.embeddings.image_token, self.embeddings.end_token):
            nn.init.normal_(param, std=std)

    def _load_bert(self) -> dict[str, list[str]] | None:
        mode, path = str(self.config.bert_init), self.config.bert_path
        if mode == "none":
            return None
        if mode == "bundled" or (mode == "auto" and path is None and str(self.config.size) == "small"):
            path = bundled_bert_path()
        elif path is None:
            if mode == "path":
                raise ConfigError("model_config.vlbert.bert_init=path needs model_config.vlbert.bert_path")
            if str(self.config.size) in ("base", "large"):
                log.info("vlbert: no bert_path given: size %s starts from random weights", self.config.size)
            return None
        check_sizes(str(path), self.hidden_size, self.sizes["num_layers"], self.sizes["num_heads"])
        return load_bert(self, str(path))

    def _transform_heads(self) -> list[str]:
        return [d for d, head in self.heads.heads.items() if getattr(head, "init_from_mlm_transform", False)]

    def _copy_mlm_transform_into_heads(self) -> None:
        for dataset in self._transform_heads():
            self.heads.heads[dataset].transform.load_state_dict(self.mlm.transform.state_dict())

    def _copy_mlm_transform(self, module, state_dict, prefix, *args) -> None:
        """Loading a checkpoint with an MLM transform but no head transform (a pre-training
        checkpoint): the fine-tuning heads' transforms start from the MLM transform."""
        for dataset in self._transform_heads():
            for key in TRANSFORM_KEYS:
                head_key, mlm_key = f"{prefix}heads.heads.{dataset}.transform.{key}", f"{prefix}mlm.transform.{key}"
                if head_key not in state_dict and mlm_key in state_dict:
                    state_dict[head_key] = state_dict[mlm_key].clone()

    def _raw_features_checkpoint(self, module, state_dict, prefix, *args) -> None:
        """A checkpoint from before VL-BERT z-scored its region features (no `region_norm.` key
        at all, but a region projection) was trained on the raw features: it loads with the
        identity statistics (mean 0, std 1), so it keeps computing what it was trained to."""
        if any(key.startswith(f"{prefix}region_norm.") for key in state_dict):
            return
        if not any(key.startswith(f"{prefix}region_visual.") for key in state_dict):
            return
        for name in self.region_norm.datasets:
            mean = getattr(self.region_norm, f"{name}_mean")
            state_dict[f"{prefix}region_norm.{name}_mean"] = torch.zeros_like(mean)
            state_dict[f"{prefix}region_norm.{name}_std"] = torch.ones_like(mean)
        if self.region_norm.datasets:
            log.warning("vlbert: the checkpoint has no region feature statistics (saved before VL-BERT z-scored "
                        "its region features): its region features stay raw (identity statistics)")

    def pretrained_key_map(self) -> dict[str, str]:
        return {"module.": ""}  # checkpoints saved from a wrapped model

    # -- visual elements ----------------------------------------------------------------------------
    def _visual(self, image: torch.Tensor | None = None, region_features: torch.Tensor | None = None,
                region_boxes: torch.Tensor | None = None, region_mask: torch.Tensor | None = None,
                image_size: torch.Tensor | None = None, masked: torch.Tensor | None = None) -> Visual | None:
        """Visual elements from precomputed region features or from the image (end to end).
        masked (B, N): builder regions whose appearance is hidden (MRC)."""
        if region_features is not None:
            if not hasattr(self, "region_visual"):
                raise ConfigError("vlbert was built without a region-feature projection (end_to_end=true and no "
                                  "dataset with visual=regions)")
            b, n = region_features.shape[:2]
            device = region_features.device
            valid = region_mask.bool() if region_mask is not None else torch.ones(b, n, dtype=torch.bool, device=device)
            masked = (masked.bool() & valid) if masked is not None else None
            width, height = image_size[:, 0], image_size[:, 1]
            whole = whole_image_box(width, height)
            included = n > 0 and bool((box_iou_rows(region_boxes[:, 0], whole) >= float(self.config.whole_image_iou)).all())
            if included:
                if masked is not None:
                    masked = masked.clone()
                    masked[:, 0] = False
                projected = self.region_visual(region_features, region_boxes, width, height, masked)
                boxes, offset = region_boxes, 0
            else:
                # the whole-image box is not among the detections: its appearance is the mean of the
                # visible regions (no information from masked RoIs leaks into it)
                visible = valid if masked is None else valid & ~masked
                boxes = torch.cat([whole[:, None].to(region_boxes.dtype), region_boxes], dim=1)
                projected = self.region_visual(region_features, boxes, width, height, masked, mean_weights=visible)
                valid = torch.cat([torch.ones_like(valid[:, :1]), valid], dim=1)
                if masked is not None:
                    masked = torch.cat([torch.zeros_like(masked[:, :1]), masked], dim=1)
                offset = 1
            if masked is None:
                masked = torch.zeros_like(valid)
            return Visual(projected, valid, boxes, offset, masked)
        if image is not None:
            if not hasattr(self, "backbone"):
                raise ConfigError("vlbert was built without the end-to-end backbone (set model_config.vlbert.end_to_end)")
            b = image.shape[0]
            height, width = image.shape[-2:]
            width_t = torch.full((b,), float(width), device=image.device)
            height_t = torch.full((b,), float(height), device=image.device)
            whole = whole_image_box(width_t, height_t)[:, None]
            if region_boxes is None:
                boxes, valid = whole, torch.ones(b, 1, dtype=torch.bool, device=image.device)
                masked = None
            else:
                region_valid = region_mask.bool() if region_mask is not None else boxes_valid(region_boxes)
                masked = (masked.bool() & region_valid) if masked is not None else None
                if masked is not None and masked.any():
                    image = zero_masked_pixels(image, region_boxes, masked)
                    masked = torch.cat([torch.zeros_like(masked[:, :1]), masked], dim=1)
                else:
                    masked = None
                boxes = torch.cat([whole.to(region_boxes.dtype), region_boxes], dim=1)
                valid = torch.cat([torch.ones_like(region_valid[:, :1]), region_valid], dim=1)
            appearance = self.backbone(image, boxes.float())
            projected = self.image_visual(appearance, boxes, width_t, height_t, masked)
            return Visual(projected, valid, boxes, 1, masked if masked is not None else torch.zeros_like(valid))
        return None

    def visual_from_batch(self, batch: Batch, boxes_key: str = "region_boxes",
                          masked: torch.Tensor | None = None) -> Visual | None:
        if "region_features" in batch:
            return self._visual(region_features=self.region_norm(batch.region_features, batch.dataset_name),
                                region_boxes=batch.region_boxes,
                                region_mask=batch.get("region_mask"), image_size=batch.image_size, masked=masked)
        if "image" in batch:
            boxes = batch.get(boxes_key)
            return self._visual(image=batch.image, region_boxes=boxes, masked=masked)
        return None

    # -- the Transformer ----------------------------------------------------------------------------
    def encode(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None, attention_mask: torch.Tensor | None,
               visual: Visual | None, text_visual_index: torch.Tensor | None = None, read: torch.Tensor | None = None):
        """-> (states (B, T, H): text token j of a sample at position j; packed mask (B, T);
        positions of the visual elements (B, M)). text_visual_index (B, L): the visual element
        each text token carries (default: the whole image). read (B, K): return only the states
        at these positions (B, K, H) (text positions are packed positions: token j at j)."""
        if attention_mask is None:
            attention_mask = input_ids != self.pad_id
        packed = self.embeddings(input_ids, token_type_ids, attention_mask,
                                 visual.features if visual is not None else None,
                                 visual.valid if visual is not None else None, text_visual_index)
        mask = packed.mask if packed.padded else None
        if read is not None and not self.config.last_layer_read_positions_only:
            states = gather_rows(self.encoder(packed.embeddings, mask), read)
        else:
            states = self.encoder(packed.embeddings, mask, read)
        return states, packed.mask, packed.visual_positions

    @staticmethod
    def first_position(input_ids: torch.Tensor) -> torch.Tensor:
        """read= for heads that use only the pooled [CLS] output."""
        return torch.zeros(input_ids.shape[0], 1, dtype=torch.long, device=input_ids.device)

    @staticmethod
    def gather_states(states: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return states.gather(1, positions[..., None].expand(-1, -1, states.shape[-1]))

    def _append_mask_sep(self, batch: Batch):
        """`[CLS] q [SEP]` -> `[CLS] q [SEP] [MASK] [SEP]` (segment A); returns ids, types, mask, [MASK] positions."""
        ids = batch.input_ids
        mask = batch.get("attention_mask")
        mask = (ids != self.pad_id) if mask is None else mask.bool()
        types = batch.get("token_type_ids")
        types = torch.zeros_like(ids) if types is None else types
        b = ids.shape[0]
        lengths = mask.sum(1)
        pad = ids.new_zeros(b, 2)
        ids = torch.cat([ids, torch.full_like(pad, self.pad_id)], 1)
        types = torch.cat([types, pad], 1)
        mask = torch.cat([mask, pad.bool()], 1)
        rows = torch.arange(b, device=ids.device)
        ids[rows, lengths] = self.special["mask"]
        ids[rows, lengths + 1] = self.special["sep"]
        mask[rows, lengths] = True
        mask[rows, lengths + 1] = True
        return ids, types, mask, lengths

    # -- tasks ----------------------------------------------------------------------------------------
    @provides("pretraining")
    def pretraining_features(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self.pretrain(batch)

    @provides("vcr", features=("answer_pooled", "rationale_pooled"))
    def choice_features(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self.vcr_features(batch)

    @provides("vqa", features=("answer_state", "pooled"))
    def vqa_features(self, batch: Batch) -> dict[str, torch.Tensor]:
        """`[CLS] q [SEP] [MASK] [SEP] regions [END]`: the [MASK] state and the pooled [CLS]."""
        ids, types, mask, where = self._append_mask_sep(batch)
        read = torch.stack([torch.zeros_like(where), where], dim=1)  # [CLS], [MASK]
        states, _, _ = self.encode(ids, types, mask, self.visual_from_batch(batch), read=read)
        return {"answer_state": states[:, 1], "pooled": self.pooler(states)}

    @provides("classification", features=("pooled",))
    def pooled_features(self, batch: Batch) -> dict[str, torch.Tensor]:
        states, _, _ = self.encode(batch.input_ids, batch.get("token_type_ids"), batch.get("attention_mask"),
                                   self.visual_from_batch(batch), read=self.first_position(batch.input_ids))
        return {"pooled": self.pooler(states)}

    @provides("rec", "grounding", features=("region_states", "pooled"))
    def region_features(self, batch: Batch) -> dict[str, torch.Tensor]:
        visual = self.visual_from_batch(batch)
        if visual is None:
            raise ConfigError("vlbert: rec/grounding batches need region_features or image + region_boxes")
        states, _, positions = self.encode(batch.input_ids, batch.get("token_type_ids"), batch.get("attention_mask"),
                                           visual)
        return {"pooled": self.pooler(states), "region_states": self.gather_states(states, positions[:, visual.offset:])}

    @provides("nlvr2", features=("pooled_pair",))
    def nlvr2_features(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Each of the two images with the sentence; the two pooled vectors concatenated."""
        flat = lambda t: None if t is None else t.reshape(-1, *t.shape[2:])  # noqa: E731
        twice = lambda t: None if t is None else t.repeat_interleave(2, dim=0)  # noqa: E731
        if "region_features" in batch:
            features = self.region_norm(batch.region_features, batch.dataset_name)
            visual = self._visual(region_features=flat(features), region_boxes=flat(batch.region_boxes),
                                  region_mask=flat(batch.get("region_mask")), image_size=flat(batch.image_size))
        else:
            visual = self._visual(image=flat(batch.image))
        ids = twice(batch.input_ids)
        states, _, _ = self.encode(ids, twice(batch.get("token_type_ids")), twice(batch.get("attention_mask")), visual,
                                   read=self.first_position(ids))
        return {"pooled_pair": self.pooler(states).view(batch.input_ids.shape[0], -1)}
