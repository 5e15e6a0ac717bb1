"""Scoring a prediction file against a benchmark's native annotations (what `vlfw_score` runs).

Each `score_<benchmark>(data_dir, split, predictions)` reads the annotations of a native split
(several, comma separated, for RefCOCO), the prediction file the builder writes (the layouts are
in docs/processors_and_metrics.md, "Scoring result files") and returns {name: value}. The
arithmetic is the in-run metrics' own pure functions (vlfw.metrics.*), so a file scores exactly
what the evaluation that wrote it reported. The annotations are parsed by the builders' own
record readers. A missing or malformed file, or predictions that do not cover exactly the
split's examples, are one DataError each.
"""

from __future__ import annotations

import logging
import os
from typing import Callable

import torch

from vlfw.datasets.predictions import box_of, keyed, prediction_rows, read_prediction_json, require_coverage
from vlfw.datasets.records import BadRecordCounter, BadRecordError, iter_json_lines, join, path_manager
from vlfw.errors import DataError

log = logging.getLogger(__name__)


def _require(path: str, what: str) -> str:
    if not path_manager.isfile(path):
        raise DataError(f"{what} not found: {path}")
    return path


def _natives(split: str) -> list[str]:
    names = [s.strip() for s in str(split).split(",") if s.strip()]
    if not names:
        raise DataError(f"--split {split!r} names no native split")
    return names


def native_records(builder_class: type, data_dir: str, split: str, name: str) -> list:
    """The records of the native split(s) `split`, read by the benchmark's own builder (visual
    regions: no image folder is needed; bad records skipped as a skip_bad_records run skips them)."""
    config = {"source": "files", "data_dir": data_dir, "visual": "regions", "skip_bad_records": True,
              "splits": {"val": _natives(split)}}  # an evaluation split (the builders know only their own keys)
    builder = builder_class(config, name)
    return list(builder.records("val"))


# -- VQA v2 and NLVR2 -------------------------------------------------------------------------------


def score_vqa2(data_dir: str, split: str, predictions: str) -> dict[str, float]:
    from vlfw.datasets.vqa2 import annotation_file, question_file
    from vlfw.metrics.vqa import score_vqa_results

    questions = _require(question_file(data_dir, split), f"VQA {split} questions")
    annotations = _require(annotation_file(data_dir, split), f"VQA {split} annotations (test splits cannot be scored locally)")
    results = read_prediction_json(predictions, 'a JSON list of {"question_id", "answer"} entries')
    if not isinstance(results, list):
        raise DataError(f"{predictions}: expected a JSON list of {{\"question_id\", \"answer\"}} entries")
    try:
        return score_vqa_results(questions, annotations, results)
    except ValueError as error:
        raise DataError(f"{predictions}: {error}") from None


def score_nlvr2(data_dir: str, split: str, predictions: str) -> dict[str, float]:
    from vlfw.datasets.nlvr2 import read_predictions_csv
    from vlfw.metrics.classification import nlvr2_sentence_key

    labels_path = _require(join(data_dir, f"{split}.json"), f"NLVR2 {split} labels")
    _require(predictions, "predictions file")
    labels: dict[str, bool] = {}
    for number, row in iter_json_lines(labels_path, BadRecordCounter(False, "nlvr2")):
        if str(row.get("label")) not in ("True", "False") or "identifier" not in row:
            raise DataError(f"{labels_path}: line {number}: no identifier or True/False label")
        labels[str(row["identifier"])] = str(row["label"]) == "True"
    predicted = read_predictions_csv(predictions)
    require_coverage(predicted, list(labels), predictions, labels_path, "identifier")
    sentences: dict[str, bool] = {}
    correct = 0
    for identifier, label in labels.items():
        right = predicted[identifier] == label
        correct += right
        key = nlvr2_sentence_key(identifier)
        sentences[key] = sentences.get(key, True) and right
    return {"accuracy": round(100.0 * correct / len(labels), 2),
            "consistency": round(100.0 * sum(sentences.values()) / len(sentences), 2),
            "num_examples": float(len(labels))}


# -- SNLI-VE ----------------------------------------------------------------------------------------


def score_snli_ve(data_dir: str, split: str, predictions: str) -> dict[str, float]:
    """accuracy and accuracy_<label> of [{"pairID", "prediction"}]."""
    from vlfw.datasets.snli_ve import LABELS, SnliVeBuilder
    from vlfw.metrics.classification import labeled_accuracy

    what = '[{"pairID", "prediction": "entailment"|"neutral"|"contradiction"}]'
    rows = prediction_rows(predictions, what, {"pairID": (str,), "prediction": (str,)})
    records = native_records(SnliVeBuilder, data_dir, split, "snli_ve")
    gold = _unique({r["id"]: LABELS[r["label"]] for r in records}, [r["id"] for r in records], data_dir, split, "pairID")
    predicted = keyed(rows, "pairID", predictions)
    require_coverage(predicted, list(gold), predictions, f"SNLI-VE {split}", "pairID")
    for key, row in predicted.items():
        if row["prediction"] not in LABELS:
            raise DataError(f"{predictions}: pairID {key}: prediction {row['prediction']!r} is not one of {', '.join(LABELS)}")
    result = labeled_accuracy([predicted[k]["prediction"] for k in gold], list(gold.values()))
    result["num_examples"] = float(len(gold))
    return result


def _unique(mapping: dict, keys: list, data_dir: str, split: str, what: str) -> dict:
    if len(mapping) != len(keys):
        seen: set = set()
        twice = next(k for k in keys if k in seen or seen.add(k))
        raise DataError(f"{data_dir} ({split}): {what} {twice!r} occurs more than once in the annotations; "
                        "predictions cannot be matched by it")
    return mapping


# -- RefCOCO, RefCOCO+, RefCOCOg -------------------------------------------------------------------

REC_BUILDERS = {"refcoco": "RefCocoUncBuilder", "refcoco_plus": "RefCocoPlusBuilder", "refcocog": "RefCocogBuilder"}


def score_rec(benchmark: str, data_dir: str, split: str, predictions: str) -> dict[str, float]:
    """Acc@0.5 (overall and per native split) of [{"sent_id", "box": [x1, y1, x2, y2]}] (original pixels)."""
    from vlfw.datasets import refcoco
    from vlfw.metrics.rec import paired_box_iou, rec_summary
    from vlfw.processors.boxes import xywh_to_xyxy

    what = '[{"sent_id", "box": [x1, y1, x2, y2]}]'
    rows = prediction_rows(predictions, what, {"sent_id": (int, str)})
    records = native_records(getattr(refcoco, REC_BUILDERS[benchmark]), data_dir, split, benchmark)
    if not records:
        raise DataError(f"{data_dir}: no {benchmark} expressions in split(s) {split}")
    keys = [str(r["sent_id"]) for r in records]
    _unique(dict.fromkeys(keys), keys, data_dir, split, "sent_id")
    predicted = keyed(rows, "sent_id", predictions)
    require_coverage(predicted, keys, predictions, f"{benchmark} {split}", "sent_id")
    boxes = torch.tensor([box_of(predicted[k], "box", predictions, f"sent_id {k}") for k in keys], dtype=torch.float32)
    # the same float32 arithmetic as the mapper's gt_box and rec_accuracy's IoU
    gt = xywh_to_xyxy(torch.tensor([r["bbox"] for r in records], dtype=torch.float32))
    hits = (paired_box_iou(boxes, gt) >= 0.5).tolist()
    result = rec_summary(hits, [r["split"] for r in records])
    result["num_examples"] = float(len(records))
    return result


# -- VCR --------------------------------------------------------------------------------------------


def score_vcr(data_dir: str, split: str, predictions: str) -> dict[str, float]:
    """q2a, qa2r, q2ar of [{"annot_id", "answer": 0..3, "rationale": 0..3}]."""
    from vlfw.datasets.vcr import VCRBuilder
    from vlfw.metrics.vcr import vcr_summary

    path = _require(join(data_dir, f"{split}.jsonl"), f"VCR {split} annotations")
    gold: dict[str, tuple[int, int]] = {}
    bad = BadRecordCounter(True, f"vcr {split}")
    for number, row in iter_json_lines(path, bad):
        where = f"{path}: line {number}"
        problem = VCRBuilder._check(row)
        if problem:  # a bad record: skipped as the builder skips it (skip_bad_records), and counted
            bad.handle(BadRecordError(path, f"line {number}", problem))
            continue
        if row.get("answer_label") is None or row.get("rationale_label") is None:
            raise DataError(f"{where}: no answer_label / rationale_label (test labels are not public: score val)")
        if "annot_id" not in row:
            raise DataError(f"{where}: no annot_id to match predictions by")
        key = str(row["annot_id"])
        if key in gold:
            raise DataError(f"{where}: annot_id {key!r} occurs more than once")
        gold[key] = (int(row["answer_label"]), int(row["rationale_label"]))
    bad.report_build()
    what = '[{"annot_id", "answer": 0..3, "rationale": 0..3}]'
    rows = prediction_rows(predictions, what, {"annot_id": (str,), "answer": (int,), "rationale": (int,)})
    predicted = keyed(rows, "annot_id", predictions)
    require_coverage(predicted, list(gold), predictions, f"VCR {split}", "annot_id")
    records = []
    for key, (answer, rationale) in gold.items():
        row = predicted[key]
        if row["answer"] not in range(4) or row["rationale"] not in range(4):
            raise DataError(f"{predictions}: annot_id {key}: answer and rationale must be 0..3, got "
                            f"{row['answer']!r}, {row['rationale']!r}")
        records.append((row["answer"] == answer, row["rationale"] == rationale))
    result = vcr_summary(records)
    result["num_questions"] = float(len(records))
    return result


# -- COCO / Flickr30k retrieval and captioning (Karpathy split) -------------------------------------


def _karpathy(benchmark: str, data_dir: str, split: str) -> list[dict]:
    from vlfw.datasets import captions

    classes = {"coco_retrieval": captions.CocoRetrievalBuilder, "flickr30k_retrieval": captions.Flickr30kRetrievalBuilder,
               "coco_captioning": captions.CocoRetrievalBuilder, "flickr30k_captioning": captions.Flickr30kRetrievalBuilder}
    images = native_records(classes[benchmark], data_dir, split, benchmark)
    if not images:
        raise DataError(f"{data_dir}: the Karpathy split file has no {split!r} image")
    return images


def score_retrieval(benchmark: str, data_dir: str, split: str, predictions: str,
                    ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """R@1/5/10 both ways from a ranking file {"text_to_image": [{"sentid", "image_ids"}],
    "image_to_text": [{"image_id", "sentids"}]}; every caption of an image is a right answer for it."""
    from vlfw.metrics.retrieval import ranks_from_lists, recall_from_ranks

    images = _karpathy(benchmark, data_dir, split)
    image_ids = [str(image["image_id"]) for image in images]
    owner = {str(s): str(image["image_id"]) for image in images for s in image["sentids"]}
    sentids = [str(s) for image in images for s in image["sentids"]]
    _unique(dict.fromkeys(image_ids), image_ids, data_dir, split, "image_id")
    _unique(owner, sentids, data_dir, split, "sentid")
    what = 'a ranking object {"text_to_image": [{"sentid", "image_ids"}], "image_to_text": [{"image_id", "sentids"}]}'
    document = read_prediction_json(predictions, what)
    if not isinstance(document, dict) or not all(isinstance(document.get(k), list)
                                                 for k in ("text_to_image", "image_to_text")):
        raise DataError(f"{predictions}: expected {what}")

    def lists(direction: str, query: str, ranked: str, queries: list[str], candidates: set[str]) -> list[list[str]]:
        entries = document[direction]
        for position, entry in enumerate(entries):
            if not isinstance(entry, dict) or query not in entry or not isinstance(entry.get(ranked), list):
                raise DataError(f"{predictions}: {direction}[{position}] is not {{{query!r}, {ranked!r}: [...]}}")
        by_query = keyed(entries, query, predictions)
        require_coverage(by_query, queries, predictions, f"{benchmark} {split} ({direction})", query)
        needed = min(max(ks), len(candidates))
        out = []
        for key in queries:
            ranking = [str(c) for c in by_query[key][ranked]]
            unknown = [c for c in ranking if c not in candidates]
            if unknown or len(set(ranking)) != len(ranking) or len(ranking) < needed:
                problem = (f"unknown ids {unknown[:3]}" if unknown else "an id listed twice"
                           if len(set(ranking)) != len(ranking) else f"{len(ranking)} ids, fewer than {needed}")
                raise DataError(f"{predictions}: {direction} {query} {key}: {ranked} has {problem}")
            out.append(ranking)
        return out

    text_lists = lists("text_to_image", "sentid", "image_ids", sentids, set(image_ids))
    image_lists = lists("image_to_text", "image_id", "sentids", image_ids, set(sentids))
    captions_of: dict[str, set[str]] = {}
    for sentid, image_id in owner.items():
        captions_of.setdefault(image_id, set()).add(sentid)
    text_ranks = ranks_from_lists(text_lists, [{owner[s]} for s in sentids])
    image_ranks = ranks_from_lists(image_lists, [captions_of[i] for i in image_ids])
    result = recall_from_ranks(text_ranks, image_ranks, ks)
    result.update(num_images=float(len(image_ids)), num_captions=float(len(sentids)))
    return result


def score_captioning(benchmark: str, data_dir: str, split: str, predictions: str,
                     extra: tuple[str, ...] | None = None) -> dict[str, float]:
    """BLEU-1..4, CIDEr-D and `extra` (default: METEOR, ROUGE-L, and SPICE when it can run offline)
    of the COCO caption results [{"image_id", "caption"}] against every caption of the split's images."""
    from vlfw.metrics.captioning import caption_scores, spice_available

    images = _karpathy(benchmark, data_dir, split)
    keys = [str(image["image_id"]) for image in images]
    _unique(dict.fromkeys(keys), keys, data_dir, split, "image_id")
    rows = prediction_rows(predictions, '[{"image_id", "caption"}]', {"image_id": (int, str), "caption": (str,)})
    predicted = keyed(rows, "image_id", predictions)
    require_coverage(predicted, keys, predictions, f"{benchmark} {split}", "image_id")
    if extra is None:
        extra = ("meteor", "rouge_l", "spice") if spice_available() else ("meteor", "rouge_l")
        if "spice" not in extra:
            log.warning("SPICE skipped: it needs the Stanford CoreNLP 3.6.0 jar in pycocoevalcap/spice/lib "
                        "(pycocoevalcap downloads it on first use, which needs network access)")
    try:
        result = caption_scores([predicted[k]["caption"] for k in keys], [image["captions"] for image in images], extra)
    except RuntimeError as error:  # no java
        raise DataError(str(error)) from None
    result["num_images"] = float(len(keys))
    return result


# -- Flickr30k Entities ------------------------------------------------------------------------------


def score_grounding(data_dir: str, split: str, predictions: str, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """recall@1/5/10 (any-box, IoU >= 0.5) of [{"id", "boxes": [[x1, y1, x2, y2], ...] best first}]."""
    from vlfw.datasets.flickr30k_entities import Flickr30kEntitiesBuilder
    from vlfw.metrics.grounding import grounding_hits, grounding_summary

    rows = prediction_rows(predictions, '[{"id", "boxes": [[x1, y1, x2, y2], ...]}]', {"id": (str,), "boxes": (list,)})
    records = native_records(Flickr30kEntitiesBuilder, data_dir, split, "flickr30k_entities")
    if not records:
        raise DataError(f"{data_dir}: no grounded phrase in split(s) {split}")
    keys = [r["id"] for r in records]
    _unique(dict.fromkeys(keys), keys, data_dir, split, "phrase id")
    predicted = keyed(rows, "id", predictions)
    require_coverage(predicted, keys, predictions, f"Flickr30k Entities {split}", "id")
    hits = []
    for record in records:
        row = predicted[record["id"]]
        boxes = [box_of({"box": b}, "box", predictions, f"phrase {record['id']}") for b in row["boxes"]]
        hits.append(grounding_hits(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), record["gt_boxes"], ks))
    result = grounding_summary(hits, ks)
    result["num_phrases"] = float(len(records))
    return result


# -- the table vlfw_score dispatches on -----------------------------------------------------------

Scorer = Callable[[str, str, str], dict]


def _bind(function: Callable, benchmark: str) -> Scorer:
    return lambda data_dir, split, predictions: function(benchmark, data_dir, split, predictions)


SCORERS: dict[str, Scorer] = {
    "vqa2": score_vqa2,
    "nlvr2": score_nlvr2,
    "snli_ve": score_snli_ve,
    **{name: _bind(score_rec, name) for name in REC_BUILDERS},
    "vcr": score_vcr,
    **{name: _bind(score_retrieval, name) for name in ("coco_retrieval", "flickr30k_retrieval")},
    **{name: _bind(score_captioning, name) for name in ("coco_captioning", "flickr30k_captioning")},
    "flickr30k_entities": score_grounding,
}
# the FIBER plugin's dense builders write the same layouts as the core builders they extend
ALIASES = {"fiber_refcoco": "refcoco", "fiber_refcoco_plus": "refcoco_plus", "fiber_refcocog": "refcocog",
           "fiber_flickr30k_entities": "flickr30k_entities"}


def score_file(benchmark: str, data_dir: str, split: str, predictions: str) -> dict[str, float]:
    """Dispatch to the benchmark's scorer (a FIBER dense builder's name scores as its core benchmark)."""
    name = ALIASES.get(benchmark, benchmark)
    if name not in SCORERS:
        from vlfw.errors import ConfigError, did_you_mean

        raise ConfigError(f"no scorer for benchmark {benchmark!r}; known: {', '.join(sorted(SCORERS))}."
                        f"{did_you_mean(benchmark, [*SCORERS, *ALIASES])}")
    if not os.path.isdir(data_dir):
        raise DataError(f"--data-dir {data_dir} is not a directory")
    return SCORERS[name](data_dir, split, predictions)
