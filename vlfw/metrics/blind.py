"""Blind levels: what a dataset's primary metric is without looking at the image, exactly.

Each is the best a model that never sees the visual input can do with the simplest prior,
fitted on the TRAIN split and scored with the task's own metric on the evaluated split:

- vqa: the most frequent human answer of the question's type in train (the "prior per
  question type" baseline of the VQA paper), scored with the official VQA accuracy;
- classification, nlvr2: the majority train label;
- rec: a uniformly random choice among the sample's candidate boxes, in expectation (the mean
  share of candidates with IoU >= 0.5 with the referred box);
- grounding: the same for Recall@1 (a candidate hits when it overlaps any box of the phrase).

Other tasks have none (None). A results table prints them beside the model's score
(`evaluation.blind_levels: true`), so a number is never read without its floor.
"""

from __future__ import annotations

import collections
import logging
from typing import Any, Callable

import torch

from vlfw.processors.boxes import box_iou

log = logging.getLogger("vlfw.metrics")

LEVELS: dict[str, Callable[[Any, str], float]] = {}


def _level(*tasks: str) -> Callable:
    def mark(function: Callable) -> Callable:
        for task in tasks:
            LEVELS[task] = function
        return function

    return mark


def question_type(record: dict) -> str:
    """The VQA question type: the annotation's `question_type`, else the first three words."""
    kind = record.get("question_type")
    return str(kind) if kind else " ".join(str(record["question"]).lower().split()[:3])


@_level("vqa")
def vqa_prior(builder: Any, split: str) -> float:
    from vlfw.metrics.vqa import vqa_score

    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    overall: collections.Counter = collections.Counter()
    for record in builder.records("train"):
        answers = record.get("answers") or []
        counts[question_type(record)].update(answers)
        overall.update(answers)
    fallback = overall.most_common(1)[0][0]
    scores = [vqa_score((counts.get(question_type(r)) or overall).most_common(1)[0][0] if r.get("answers") else fallback,
                        r["answers"]) for r in builder.records(split) if r.get("answers")]
    return round(100.0 * sum(scores) / len(scores), 2)


@_level("classification", "nlvr2")
def majority_label(builder: Any, split: str) -> float:
    train = collections.Counter(r["label"] for r in builder.records("train") if r.get("label") is not None)
    majority = train.most_common(1)[0][0]
    labels = [r["label"] for r in builder.records(split) if r.get("label") is not None]
    return round(100.0 * sum(label == majority for label in labels) / len(labels), 2)


def _random_candidate(builder: Any, split: str, gt_field: str) -> float:
    dataset = builder.build(split)
    shares = []
    for index in range(len(dataset)):
        sample = dataset[index]
        boxes = torch.as_tensor(sample["region_boxes"]).float().reshape(-1, 4)
        gt = torch.as_tensor(sample[gt_field]).float().reshape(-1, 4)
        if len(boxes) == 0 or len(gt) == 0:
            continue
        hits = (box_iou(boxes, gt) >= 0.5).any(dim=1).float()
        shares.append(float(hits.mean()))
    return round(100.0 * sum(shares) / len(shares), 2)


@_level("rec")
def rec_random_candidate(builder: Any, split: str) -> float:
    return _random_candidate(builder, split, "gt_box")


@_level("grounding")
def grounding_random_candidate(builder: Any, split: str) -> float:
    return _random_candidate(builder, split, "gt_boxes")


def blind_level(builder: Any, task: str, split: str) -> float | None:
    """The blind level of `builder`'s `split` for its task's primary metric, or None."""
    function = LEVELS.get(task)
    if function is None:
        return None
    try:
        return function(builder, split)
    except (KeyError, ValueError, ZeroDivisionError, IndexError) as error:  # no labels in this split
        log.info("no blind level for %s %s: %s", builder.name, split, error)
        return None
