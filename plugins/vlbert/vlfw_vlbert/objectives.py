"""VL-BERT's pre-training objectives: MLM with visual clues, masked RoI classification with
linguistic clues, sentence-image relationship, text-only MLM. A mixin of `VLBert`."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vlfw.data.batch import Batch
from vlfw.datasets.records import stable_seed
from vlfw.errors import ConfigError
from vlfw_vlbert.heads import soft_cross_entropy
from vlfw_vlbert.visual import boxes_valid


class PretrainingObjectives:
    """`pretrain` and the seeded RoI masking for `VLBert` (uses its encode, visual_from_batch,
    mlm, mrc, sir, pooler, mask_step, config)."""

    def _generator(self, batch: Batch, salt: int) -> torch.Generator:
        indices = batch.get("index")
        if isinstance(indices, torch.Tensor):
            indices = indices.tolist()
        indices = [int(i) for i in indices] if indices is not None else list(range(batch.batch_size))
        return torch.Generator().manual_seed(stable_seed(salt, int(self.mask_step), *indices[:256]))

    def _region_mask(self, batch: Batch, valid: torch.Tensor, probability: float | None = None) -> torch.Tensor:
        if "masked_regions" in batch:
            return batch.masked_regions.bool() & valid
        if probability is None:
            probability = float(self.config.pretraining.region_mask_probability)
        draw = torch.rand(valid.shape, generator=self._generator(batch, 1))
        return (draw.to(valid.device) < probability) & valid

    def pretrain(self, batch: Batch) -> dict[str, torch.Tensor]:
        pre = self.config.pretraining
        ids, labels = batch.input_ids, batch.get("mlm_labels")
        if self.training:
            self.mask_step += 1
        outputs: dict[str, torch.Tensor] = {}
        has_visual = "region_features" in batch or "image" in batch
        if not has_visual:
            if not pre.text_only_mlm:
                raise ConfigError("vlbert: a pre-training batch without visual input and pretraining.text_only_mlm=false")
            states, _, _ = self.encode(ids, batch.get("token_type_ids"), batch.get("attention_mask"), None)
            outputs["loss/mlm_text"] = self._mlm(states, labels)
            return outputs

        # masked RoI classification needs the detector's class distribution
        targets = batch.get("region_class_probs")
        do_mrc = self.mrc is not None and targets is not None and targets.shape[-1] == self.mrc.net[-1].out_features
        masked = None
        if do_mrc:
            if "region_features" in batch:
                valid = batch.get("region_mask")
                valid = valid.bool() if valid is not None else torch.ones(batch.region_features.shape[:2], dtype=torch.bool)
            else:
                valid = boxes_valid(batch.region_boxes)
            masked = self._region_mask(batch, valid)
        visual = self.visual_from_batch(batch, masked=masked)

        b = ids.shape[0]
        matched = torch.ones(b, dtype=torch.bool, device=ids.device)
        if self.sir is not None and b > 1:
            mismatch = torch.rand(b, generator=self._generator(batch, 2)) < float(pre.sir_mismatch_probability)
            mismatch = mismatch.to(ids.device)
            rows = torch.arange(b, device=ids.device)
            source = torch.where(mismatch, (rows + 1) % b, rows)  # another sample's image
            visual = visual.select(source)
            matched = ~mismatch
            if targets is not None:
                targets = targets[source]
        states, _, positions = self.encode(ids, batch.get("token_type_ids"), batch.get("attention_mask"), visual)
        if pre.mlm and labels is not None:
            outputs["loss/mlm"] = self._mlm(states, labels)
        if do_mrc:
            region_states = self.gather_states(states, positions[:, visual.offset:])
            chosen = visual.masked[:, visual.offset:] & matched[:, None]
            if chosen.any():
                outputs["loss/mrc"] = soft_cross_entropy(self.mrc(region_states[chosen]), targets[chosen])
            else:
                outputs["loss/mrc"] = self.mrc(region_states[:, :1]).sum() * 0.0
        if self.sir is not None:
            outputs["loss/sir"] = F.cross_entropy(self.sir(self.pooler(states)).float(), matched.long())
        return outputs

    def _mlm(self, states: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if labels is None:
            raise ConfigError("vlbert: MLM needs mlm_labels "
                              "(set dataset_config.<name>.processors.masking.params.probability > 0)")
        text = states[:, : labels.shape[1]]
        chosen = labels != -100
        if not chosen.any():
            return self.mlm(text[:, :1]).sum() * 0.0
        logits = self.mlm(text[chosen])
        return F.cross_entropy(logits.float(), labels[chosen])
