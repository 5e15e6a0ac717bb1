"""CMAL data: COCO captions (Karpathy split) over region features, with anchor points.

`cmal_coco_captions` is `coco_retrieval` with `visual: regions`, the npy feature format (the one
that carries the detector's class scores) and a `processors.anchors` role (`anchor_points`,
vlfw.processors.anchors); its training samples also hold the anchor fields (docs/thesaurus.md):
anchor_region_index, anchor_token_index (A,), anchor_token_mask (A, L), anchor_mask (A,).
Evaluation samples (all captions of an image) carry no anchors.

The pre-training datasets `cmal_pretraining` and `cmal_amc` ... `cmal_vtc` (task `pretraining`) add
what the objectives need: `mlm_input_ids` / `mlm_labels` (non-anchor words masked) and
`mrm_regions` (non-anchor regions to mask); `input_ids` stay clean for AMC, ITM and VTC.
"""

from __future__ import annotations

import torch

from vlfw.data.batch import Sample
from vlfw.datasets.captions import CocoRetrievalBuilder, RetrievalMapper, per_caption
from vlfw.datasets.common import dataset_defaults
from vlfw.errors import ConfigError
from vlfw.processors.anchors import anchor_fields, build_anchor_processor
from vlfw.processors.masking import mask_regions, whole_word_mask
from vlfw.registry import DATASETS

ANCHOR_DEFAULTS = {"type": "anchor_points", "params": {"thesaurus": "shapes", "background": 0}}


class AnchoredCaptionsMapper(RetrievalMapper):
    """RetrievalMapper whose (regions, one caption) samples also hold the caption's anchors."""

    def __init__(self, *, anchors=None, **arguments) -> None:
        super().__init__(**arguments)
        self.anchors = anchors

    def __call__(self, record: dict, index: int, generator: torch.Generator) -> Sample:
        if self.anchors is None or "caption" not in record:
            return super().__call__(record, index, generator)
        sample = Sample(index=index, split=record["split"], image_id=record["image_id"])
        sample.id = f"{record['image_id']}_{record['caption_index']}"
        encoded = self.encode(sample, record["caption"])
        sample.update(self.visual_fields(record, generator))
        sample.update(self.anchors.sample_fields(encoded, sample.get("region_class_probs")))
        return sample


@DATASETS.register("cmal_coco_captions")
class CmalCocoCaptionsBuilder(CocoRetrievalBuilder):
    """coco_retrieval over region features with anchor points on its training samples."""

    BENCHMARK = "coco_retrieval"
    MAPPER = AnchoredCaptionsMapper
    DEFAULT_CONFIG = dataset_defaults(**{
        **CocoRetrievalBuilder.DEFAULT_CONFIG,
        "visual": "regions",
        "features": {"format": "npy", "path": None, "max_regions": 36},
        "processors": {**CocoRetrievalBuilder.DEFAULT_CONFIG["processors"], "anchors": ANCHOR_DEFAULTS},
    })

    def __init__(self, config, name: str) -> None:
        super().__init__(config, name)
        self._anchors = None
        self._anchors_built = False

    @property
    def anchor_processor(self):
        """The `processors.anchors` processor (None when turned off with type: null)."""
        if not self._anchors_built:
            self._anchors = build_anchor_processor(self) if self.visual == "regions" else None
            self._anchors_built = True
        return self._anchors

    def mapper_arguments(self, split: str) -> dict:
        return {**super().mapper_arguments(split), "anchors": self.anchor_processor if self.is_train(split) else None}


# -- pre-training: one builder, one registered name per objective ---------------------------------

OBJECTIVES = ("amc", "mlm", "mrm", "itm", "vtc")


def mask_words_outside_anchors(encoded: dict, anchor_token_mask: torch.Tensor, masking, generator: torch.Generator
                               ) -> tuple[torch.Tensor, torch.Tensor]:
    """MLM on the caption's non-anchor words: the core's whole-word masking (15%, 80/10/10) with the
    anchor words' word ids blanked, so they are never chosen. -> (masked input_ids, mlm_labels)."""
    anchored = set(anchor_token_mask.any(dim=0).nonzero().flatten().tolist()) if anchor_token_mask.numel() else set()
    word_ids = [None if position in anchored else word for position, word in enumerate(encoded["word_ids"])]
    return whole_word_mask(encoded["input_ids"], word_ids, masking.vocab_size, masking.mask_id, masking.probability,
                           generator, masking.special_ids)


def mask_regions_outside_anchors(region_mask: torch.Tensor | None, num_regions: int, anchor_regions: torch.Tensor,
                                 probability: float, generator: torch.Generator) -> torch.Tensor:
    """MRM on the non-anchor regions: each chosen with `probability` (the core's `mask_regions`), at
    least one when the sample has a non-anchor region. -> (N,) bool."""
    eligible = torch.ones(num_regions, dtype=torch.bool) if region_mask is None else region_mask.bool().clone()
    eligible[anchor_regions.long()] = False
    chosen = mask_regions(num_regions, probability, generator) & eligible
    if not bool(chosen.any()) and bool(eligible.any()):
        candidates = eligible.nonzero().flatten()
        chosen[candidates[int(torch.randint(len(candidates), (1,), generator=generator))]] = True
    return chosen


class PretrainingMapper(AnchoredCaptionsMapper):
    """A training sample (regions, one caption, its anchors) with what its objectives need:
    `mlm_input_ids` / `mlm_labels` (non-anchor words masked; `input_ids` stays clean for the other
    objectives) and `mrm_regions` (N,) bool (non-anchor regions to mask)."""

    def __init__(self, *, masking=None, region_masking=None, **arguments) -> None:
        super().__init__(**arguments)
        self.masking = masking
        self.region_masking = region_masking

    def __call__(self, record: dict, index: int, generator: torch.Generator) -> Sample:
        sample = Sample(index=index, split=record["split"], image_id=record["image_id"])
        sample.id = f"{record['image_id']}_{record['caption_index']}"
        encoded = self.encode(sample, record["caption"])
        sample.update(self.visual_fields(record, generator))
        if self.anchors is not None:
            sample.update(self.anchors.sample_fields(encoded, sample.get("region_class_probs")))
        else:  # no anchors: every word and region is "non-anchor"
            sample.update(anchor_fields([], len(encoded["input_ids"])))
        if self.masking is not None and self.masking.enabled:
            sample.mlm_input_ids, sample.mlm_labels = mask_words_outside_anchors(
                encoded, sample.anchor_token_mask, self.masking, generator)
        if self.region_masking is not None and self.region_masking.enabled and "region_features" in sample:
            sample.mrm_regions = mask_regions_outside_anchors(
                sample.get("region_mask"), len(sample.region_features), sample.anchor_region_index,
                self.region_masking.probability, generator)
        return sample


class CmalPretrainingBuilder(CmalCocoCaptionsBuilder):
    """COCO captions (Karpathy split) over npy regions as a `pretraining` dataset of CMAL: one sample
    per (image, caption) in every split, with its anchors and the objectives' masks.

    `objectives` (a subset of amc, mlm, mrm, itm, vtc) names what its batches train; the model
    reads it from TaskInfo.extra["cmal_objectives"]. `cmal_pretraining` trains all five (gamma as
    loss_weights), `cmal_amc` ... `cmal_vtc` one each (gamma as multitask.ratios). There are no
    metrics: pre-training recipes are run_type train."""

    TASK = "pretraining"
    MAPPER = PretrainingMapper
    DEFAULT_CONFIG = dataset_defaults(**{
        **CmalCocoCaptionsBuilder.DEFAULT_CONFIG,
        "objectives": list(OBJECTIVES),
        "processors": {**CmalCocoCaptionsBuilder.DEFAULT_CONFIG["processors"],
                       "masking": {"type": "whole_word_masking", "params": {"probability": 0.15}},
                       "region_masking": {"type": "region_masking", "params": {"probability": 0.15}}},
        "losses": [],
        "metrics": [],
    })

    def __init__(self, config, name: str) -> None:
        super().__init__(config, name)
        objectives = [str(o) for o in (self.option("objectives") or [])]
        unknown = sorted(set(objectives) - set(OBJECTIVES))
        if unknown or not objectives:
            raise ConfigError(f"dataset_config.{name}.objectives must be a non-empty subset of {', '.join(OBJECTIVES)}"
                              f"{', got unknown ' + ', '.join(unknown) if unknown else ''}")
        self.objectives = tuple(o for o in OBJECTIVES if o in objectives)

    def read_records(self, split: str, bad) -> list[dict]:
        """One record per (image, caption) in every split: a validation pass computes the same
        objectives on the val captions (there are no metrics: the losses are what it gives)."""
        return per_caption(self.read_images(split, bad))

    def mapper_arguments(self, split: str) -> dict:
        arguments = super().mapper_arguments(split)
        # only what the objectives read: MLM fields for MLM (and AMC's anchor-free fallback), MRM's mask
        wants_words = bool({"mlm", "amc"} & set(self.objectives))
        wants_regions = "mrm" in self.objectives
        arguments["masking"] = self.build_processor("masking", tokenizer=self.text_processor) if wants_words else None
        arguments["region_masking"] = self.build_processor("region_masking") if wants_regions else None
        arguments["anchors"] = self.anchor_processor if {"amc", "mlm", "mrm"} & set(self.objectives) else None
        return arguments

    def task_info(self):
        return super().task_info().replace(extra={"cmal_objectives": self.objectives})


def _one_objective(objective: str) -> type:
    defaults = dataset_defaults(**{**CmalPretrainingBuilder.DEFAULT_CONFIG, "objectives": [objective]})
    return type(f"Cmal{objective.upper()}Builder", (CmalPretrainingBuilder,), {
        "DEFAULT_CONFIG": defaults, "__doc__": f"`cmal_pretraining` whose batches train {objective.upper()} only.",
        "__module__": __name__})


DATASETS.register("cmal_pretraining")(CmalPretrainingBuilder)
ONE_OBJECTIVE_BUILDERS = {objective: DATASETS.register(f"cmal_{objective}")(_one_objective(objective))
                          for objective in OBJECTIVES}
