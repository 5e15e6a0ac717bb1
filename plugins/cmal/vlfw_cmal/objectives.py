"""CMAL's pre-training heads and objectives: AMC (CMAC's two recoveries), MLM on non-anchor words,
MRM (masked region classification) on non-anchor regions, ITM on [CLS] (FC + sigmoid, BCE) and
VTC on the UMSE [IMG] / [TXT] states (the core's symmetric InfoNCE, negatives from every rank).

Every objective has its own pass and its own head, so its loss reaches only what it should:
VTC stops at the UMSE encoders (and its projections), MRM never touches CMAC's heads, and so on
(tests/test_cmal_objectives.py checks each)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vlfw.data.batch import Batch
from vlfw.datasets.records import stable_seed
from vlfw.errors import ConfigError
from vlfw.losses.contrastive import image_text_contrastive
from vlfw_cmal.cmac import amc_loss, amc_targets


class MaskedLanguageModelHead(nn.Module):
    """BERT's transform (dense, GELU, LayerNorm) and a decoder tied to the textual UMSE word embeddings."""

    def __init__(self, hidden: int, word_embeddings: nn.Embedding, eps: float) -> None:
        super().__init__()
        self.transform = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.LayerNorm(hidden, eps=eps))
        self.tied = [word_embeddings]  # a list: not a second copy in the state dict
        self.bias = nn.Parameter(torch.zeros(word_embeddings.num_embeddings))

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return F.linear(self.transform(states), self.tied[0].weight, self.bias)


class VisionTextContrastHead(nn.Module):
    """[IMG] / [TXT] -> (optional linear projections) -> L2-normalised; the temperature, fixed or learned."""

    def __init__(self, hidden: int, projection_size: int | None, temperature: float, learn_temperature: bool) -> None:
        super().__init__()
        if temperature <= 0:
            raise ConfigError(f"model_config.cmal.pretraining.vtc_temperature must be > 0, got {temperature}")
        if projection_size is not None:
            self.image_projection = nn.Linear(hidden, int(projection_size))
            self.text_projection = nn.Linear(hidden, int(projection_size))
        self.temperature = float(temperature)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature))) if learn_temperature else None

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if hasattr(self, "image_projection"):
            image, text = self.image_projection(image), self.text_projection(text)
        return F.normalize(image.float(), dim=-1), F.normalize(text.float(), dim=-1)

    def loss(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        image, text = self(image, text)
        if self.logit_scale is not None:
            return image_text_contrastive(image, text, self.logit_scale).loss
        return image_text_contrastive(image, text, temperature=self.temperature).loss


def zero_loss(*tensors: torch.Tensor) -> torch.Tensor:
    """0 that keeps the graph of `tensors` (every rank's DDP bucket sees the same parameters)."""
    return sum(t.sum() * 0.0 for t in tensors)


class PretrainingObjectives:
    """The `pretraining` task of `CMAL` (a mixin: uses its umse, fuse, heads and config)."""

    def _generator(self, batch: Batch, salt: int, per_batch: bool = True) -> torch.Generator:
        """Seeded by the update counter (and the batch's samples): the same draws on a rerun and
        a resume; `per_batch=False`: the counter only (identical on every rank)."""
        numbers = [salt, int(self.objective_step)]
        if per_batch:
            indices = batch.get("index")
            indices = indices.tolist() if isinstance(indices, torch.Tensor) else list(indices or [])
            numbers += [int(i) for i in indices[:256]]
        return torch.Generator().manual_seed(stable_seed(*numbers) & 0x7FFFFFFFFFFFFFFF)

    def batch_objectives(self, batch: Batch) -> tuple[str, ...]:
        """What this batch trains: its dataset's objectives that the model has heads for, or one
        of them drawn with the proportions gamma (pretraining.sample_objectives)."""
        objectives = self.dataset_objectives[batch.dataset_name]
        if not bool(self.config.pretraining.sample_objectives) or len(objectives) == 1:
            return objectives
        weights = torch.tensor([self.gamma.get(o, 0.0) for o in objectives], dtype=torch.float64)
        if float(weights.sum()) <= 0:
            raise ConfigError(f"model_config.cmal.pretraining.gamma gives no weight to {list(objectives)}")
        draw = torch.multinomial(weights, 1, generator=self._generator(batch, 5, per_batch=False))
        return (objectives[int(draw)],)

    def pretrain(self, batch: Batch) -> dict[str, torch.Tensor]:
        if self.training:
            self.objective_step += 1
        objectives = self.batch_objectives(batch)
        losses: dict[str, torch.Tensor] = {}
        clean = None
        if {"amc", "itm", "vtc"} & set(objectives):
            clean = self.umse(batch, batch.input_ids)
        if "amc" in objectives:
            losses.update(self.amc_objective(batch, clean))
            if self._anchor_free(batch) and str(self.config.pretraining.anchor_free) == "mlm" and "mlm" not in objectives:
                losses["loss/mlm"] = self.mlm_objective(batch)
        if "mlm" in objectives:
            losses["loss/mlm"] = self.mlm_objective(batch)
        if "mrm" in objectives:
            losses["loss/mrm"] = self.mrm_objective(batch)
        if "itm" in objectives:
            losses["loss/itm"] = self.itm_objective(batch, clean)
        if "vtc" in objectives:
            visual, _, text, _ = clean
            losses["loss/vtc"] = self.vtc.loss(visual[:, 0], text[:, 0])
        return losses

    @staticmethod
    def _anchor_free(batch: Batch) -> bool:
        anchors = batch.get("anchor_mask")
        return anchors is None or not bool(anchors.any())

    # -- AMC ----------------------------------------------------------------------------------
    def amc_objective(self, batch: Batch, clean) -> dict[str, torch.Tensor]:
        """Scan the anchors (one hybrid sequence per anchor), swap, recover both identities."""
        if "region_class_probs" not in batch:
            raise ConfigError("cmal: AMC needs the detector's class scores (region_class_probs): use region "
                              "features with features.format=npy")
        hybrid, states = self.fuse(*clean, batch=batch, scan=None, generator=self._generator(batch, 1))
        rows, words, regions = amc_targets(hybrid, batch.input_ids, batch.region_class_probs)
        word_logits, region_logits = self.cmac(states, hybrid, rows)
        losses = amc_loss(word_logits, region_logits, words, regions)
        if not len(rows):  # keep the graph of the whole pass (DDP) while adding nothing
            keep = zero_loss(states, word_logits, region_logits, *(p for p in self.cmac.parameters()))
            losses = {k: v + keep for k, v in losses.items()}
        return {f"loss/{k}": v for k, v in losses.items()}

    # -- MLM ----------------------------------------------------------------------------------
    def mlm_objective(self, batch: Batch) -> torch.Tensor:
        """Non-anchor words masked by the dataset (mlm_input_ids / mlm_labels), recovered over the plain sequence."""
        labels = batch.get("mlm_labels")
        if labels is None or "mlm_input_ids" not in batch:
            raise ConfigError("cmal: MLM needs the pre-training dataset's masked words (a cmal_pretraining dataset "
                              "with processors.masking.params.probability > 0)")
        hybrid, states = self.fuse(*self.umse(batch, batch.mlm_input_ids), batch=batch, scan="none")
        words = states[:, hybrid.word_slots()]  # tokens 1 .. L-1
        chosen = labels[:, 1:] != -100
        if not bool(chosen.any()):
            return zero_loss(words, *(p for p in self.mlm.parameters()))
        return F.cross_entropy(self.mlm(words[chosen]).float(), labels[:, 1:][chosen])

    # -- MRM ----------------------------------------------------------------------------------
    def mrm_objective(self, batch: Batch) -> torch.Tensor:
        """Non-anchor regions' features zeroed (after normalisation: the mean feature; boxes kept),
        their detector argmax class predicted from their CMAI states."""
        chosen = batch.get("mrm_regions")
        if chosen is None or "region_class_probs" not in batch:
            raise ConfigError("cmal: MRM needs masked regions and the detector's class scores (a cmal_pretraining "
                              "dataset over npy features with processors.region_masking.params.probability > 0)")
        chosen = chosen.bool()
        hybrid, states = self.fuse(*self.umse(batch, batch.input_ids, hidden_regions=chosen), batch=batch, scan="none")
        regions = states[:, hybrid.region_slots()]
        if not bool(chosen.any()):
            return zero_loss(regions, *(p for p in self.mrm.parameters()))
        targets = batch.region_class_probs.argmax(dim=-1)
        return F.cross_entropy(self.mrm(regions[chosen]).float(), targets[chosen])

    # -- ITM ----------------------------------------------------------------------------------
    def mismatched_images(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(image row of each pair (B,), label (B,) 1 = match): a share `itm_negative_probability`
        of the captions gets another image of the batch (a different image_id)."""
        size = batch.input_ids.shape[0]
        image_ids = batch.get("image_id")
        image_ids = list(range(size)) if image_ids is None else [str(i) for i in image_ids]
        generator = self._generator(batch, 3)
        draws = torch.rand(size, generator=generator).tolist()
        source, labels = list(range(size)), [1.0] * size
        for row in range(size):
            others = [j for j in range(size) if image_ids[j] != image_ids[row]]
            if others and draws[row] < float(self.config.pretraining.itm_negative_probability):
                source[row] = others[int(torch.randint(len(others), (1,), generator=generator))]
                labels[row] = 0.0
        device = batch.input_ids.device
        return torch.tensor(source, device=device), torch.tensor(labels, device=device)

    def itm_objective(self, batch: Batch, clean) -> torch.Tensor:
        visual, visual_mask, text, text_mask = clean
        source, labels = self.mismatched_images(batch)
        hybrid, states = self.fuse(visual[source], visual_mask[source], text, text_mask, batch=batch, scan="none")
        logits = self.itm(states[:, 0]).squeeze(-1)  # FC on [CLS]; sigmoid inside the BCE
        return F.binary_cross_entropy_with_logits(logits.float(), labels)
