"""VL-BERT on VCR: each choice encoded with the RoIs, tokens carrying their objects' features, and
the auxiliary (masked) RoI classification of the paper's VCR fine-tuning. A mixin of `VLBert`."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from vlfw.data.batch import Batch
from vlfw.errors import ConfigError
from vlfw_vlbert.heads import soft_cross_entropy
from vlfw_vlbert.visual import box_iou_batched, boxes_valid

log = logging.getLogger(__name__)


class VCRFeatures:
    """`vcr_features` for `VLBert` (uses its encode, visual_from_batch, pooler, mrc, config)."""

    def vcr_features(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Each choice as `[CLS] A [SEP] B [SEP] RoIs [END]`; tokens naming an object carry that
        object's visual feature. Images: the elements are the whole image and the VCR object
        boxes; region features: the whole image and the detections, an object's feature being
        that of the detection that overlaps its box most. In training, with class targets, adds
        the auxiliary RoI classification loss ("loss/roi_classification")."""
        roi = self._vcr_roi_targets(batch) if self.training else None
        masked = None
        if roi is not None and float(self.config.vcr.roi_mask_probability) > 0:
            self.mask_step += 1
            masked = self._region_mask(batch, roi[1], float(self.config.vcr.roi_mask_probability))
        visual = self.visual_from_batch(batch, boxes_key="object_boxes", masked=masked)
        if visual is None:
            raise ConfigError("vlbert: vcr batches need image or region_features")
        boxes = batch.get("object_boxes")
        if "region_features" in batch and boxes is not None:
            iou = box_iou_batched(boxes, visual.boxes)  # (B, O, M)
            iou = iou.masked_fill(~visual.valid[:, None], -1.0)
            iou[..., 0] = -0.5  # the whole image only when no detection overlaps
            object_element = iou.argmax(-1)
        else:
            count = boxes.shape[1] if boxes is not None else 0
            object_element = (torch.arange(count, device=visual.features.device)[None].expand(visual.features.shape[0], -1)
                              + visual.offset)
        features = {}
        roi_logits, roi_targets = [], []
        for kind in ("answer", "rationale"):
            if f"{kind}_input_ids" not in batch:
                continue
            ids = batch[f"{kind}_input_ids"]
            b, k, length = ids.shape
            flat = lambda t: None if t is None else t.reshape(b * k, length)  # noqa: E731
            repeated = visual.repeat(k)
            object_ids = batch.get(f"{kind}_object_ids")
            element = torch.zeros(b, k, length, dtype=torch.long, device=ids.device)
            if object_ids is not None and object_element.shape[1] > 0:
                known = (object_ids >= 0) & (object_ids < object_element.shape[1])
                lookup = object_element[:, None].expand(-1, k, -1).gather(
                    2, object_ids.clamp(min=0, max=object_element.shape[1] - 1))
                element = torch.where(known, lookup, element)
            states, _, positions = self.encode(flat(ids), flat(batch.get(f"{kind}_token_type_ids")),
                                               flat(batch.get(f"{kind}_attention_mask")), repeated,
                                               element.reshape(b * k, length),
                                               read=None if roi is not None else self.first_position(flat(ids)))
            features[f"{kind}_pooled"] = self.pooler(states).view(b, k, -1)
            if roi is not None:
                # every choice's sequence classifies the same RoIs (masked ones, or all when nothing is masked)
                targets, valid = roi
                chosen = (visual.masked[:, visual.offset:] if masked is not None else valid.clone())
                if visual.offset == 0:
                    chosen[:, 0] = False  # the whole image is never classified
                region_states = self.gather_states(states, positions[:, visual.offset:]).view(b, k, -1, states.shape[-1])
                roi_logits.append(self.mrc(region_states[chosen[:, None].expand(-1, k, -1)]))
                roi_targets.append(targets[:, None].expand(-1, k, -1, -1)[chosen[:, None].expand(-1, k, -1)])
        if roi is not None:
            logits = torch.cat(roi_logits)
            if logits.shape[0]:  # weighted by dataset_config.vcr.loss_weights.roi_classification
                features["loss/roi_classification"] = soft_cross_entropy(logits, torch.cat(roi_targets))
            else:  # nothing masked in this batch: keep the head in the graph
                features["loss/roi_classification"] = self.mrc(states[:1, 0]).sum() * 0.0
        return features

    def _vcr_roi_targets(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Class targets of VCR's builder RoIs: (distribution (B, N, C), valid (B, N)), or None.
        Region features: the detector's class probabilities of the detections. Images: the VCR
        objects' labels through `vcr.object_classes` (one-hot)."""
        if self.mrc is None or not self.config.vcr.roi_classification:
            return None
        classes = self.mrc.net[-1].out_features
        if "region_features" in batch:
            probs = batch.get("region_class_probs")
            if probs is None:
                if not getattr(self, "_said_no_vcr_targets", False):
                    self._said_no_vcr_targets = True
                    log.warning("vlbert: VCR region features without class probabilities (cls_prob): no auxiliary "
                                "RoI classification for these batches (features.format=npy with cls_prob enables it)")
                return None
            if probs.shape[-1] != classes:
                raise ConfigError(f"vlbert: VCR region class probabilities have {probs.shape[-1]} classes, the RoI "
                                  f"classification head {classes}: set model_config.vlbert.detector_classes to match, "
                                  "or model_config.vlbert.vcr.roi_classification=false")
            valid = batch.get("region_mask")
            valid = valid.bool() if valid is not None else torch.ones(probs.shape[:2], dtype=torch.bool, device=probs.device)
            return probs, valid
        boxes, objects = batch.get("object_boxes"), batch.get("objects")
        if "image" not in batch or boxes is None or objects is None or not self.object_class_index:
            return None
        labels = torch.full(boxes.shape[:2], -1, dtype=torch.long)
        for row, names in enumerate(objects):
            for column, name in enumerate(list(names)[: boxes.shape[1]]):
                if str(name) not in self.object_class_index:
                    raise ConfigError(f"vlbert: VCR object label {name!r} is not in model_config.vlbert.vcr.object_classes")
                labels[row, column] = self.object_class_index[str(name)]
        labels = labels.to(boxes.device)
        valid = (labels >= 0) & boxes_valid(boxes)
        return F.one_hot(labels.clamp(min=0), classes).to(boxes.dtype), valid
