"""VQA accuracy, identical to the official VQA v2 evaluation."""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import torch

from vlfw.data.batch import Batch
from vlfw.metrics.base import Metric
from vlfw.metrics.common import field, output, require_records, sample_keys, to_list
from vlfw.processors.answers import clean_whitespace, process_digit_article, process_punctuation
from vlfw.registry import METRICS
from vlfw.tasks import TaskInfo

ANSWER_TYPE_KEYS = {"yes/no": "vqa_accuracy_yes_no", "number": "vqa_accuracy_number", "other": "vqa_accuracy_other"}


def _official_normalize(text: str) -> str:
    return process_digit_article(process_punctuation(text))


def _question_accuracy(prediction: str, human_answers: Sequence[str], fields: Sequence[Any] | None = None) -> float:
    """Official per-question accuracy.

    The "other" answers of annotation i are those whose entry differs from entry i. Without
    `fields`, entries are told apart by position; with `fields[i]` (the entry's other fields,
    e.g. answer_id), entries are compared as the official code compares its dicts: the other
    fields together with the processed answer.
    """
    humans = [clean_whitespace(a) for a in human_answers]
    prediction = clean_whitespace(prediction)
    if len(set(humans)) > 1:
        humans = [_official_normalize(a) for a in humans]
        prediction = _official_normalize(prediction)
    if fields is None:
        entries: list[Any] = list(range(len(humans)))
    else:
        entries = [(f, h) for f, h in zip(fields, humans)]
    accuracies = []
    for entry in entries:
        matches = sum(1 for other, answer in zip(entries, humans) if other != entry and answer == prediction)
        accuracies.append(min(1.0, matches / 3.0))
    return sum(accuracies) / len(accuracies)


def vqa_score(prediction: str, human_answers: Sequence[str]) -> float:
    """Official accuracy in [0, 1] of one predicted answer against the human answers."""
    if not human_answers:
        raise ValueError("vqa_score needs at least one human answer")
    return _question_accuracy(prediction, list(human_answers))


def _summary(scores: Sequence[float], answer_types: Sequence[str]) -> dict[str, float]:
    """Official reporting: 100 * mean rounded to 2 places, overall and per answer type."""
    result = {"vqa_accuracy": round(100.0 * sum(scores) / len(scores), 2)}
    by_type: dict[str, list[float]] = {}
    for score, answer_type in zip(scores, answer_types):
        by_type.setdefault(answer_type, []).append(score)
    for answer_type, values in sorted(by_type.items()):
        key = ANSWER_TYPE_KEYS.get(answer_type, "vqa_accuracy_" + str(answer_type).replace("/", "_").replace(" ", "_"))
        result[key] = round(100.0 * sum(values) / len(values), 2)
    return result


@METRICS.register("vqa_accuracy")
class VQAAccuracy(Metric):
    """Official VQA accuracy of argmax(outputs["logits"]) mapped through the dataset's answer
    vocabulary (TaskInfo.answers)."""

    primary = "vqa_accuracy"

    def __init__(self, task_info: TaskInfo | None = None, **params: Any) -> None:
        super().__init__(task_info=task_info, **params)
        answers = task_info.answers if task_info is not None else None
        if not answers:
            raise ValueError("metric 'vqa_accuracy' needs the dataset's answer vocabulary (TaskInfo.answers) "
                             "from the dataset builder")
        self.answers = list(answers)

    def update(self, batch: Batch, outputs: dict[str, torch.Tensor]) -> None:
        logits = output(outputs, "logits", "vqa_accuracy")
        if logits.shape[-1] != len(self.answers):
            raise ValueError(f"vqa_accuracy: logits have {logits.shape[-1]} classes but the answer "
                             f"vocabulary has {len(self.answers)} answers")
        predicted = logits.detach().argmax(dim=-1).tolist()
        human = to_list(field(batch, "answers", "vqa_accuracy"))
        types = to_list(batch["answer_type"]) if "answer_type" in batch else ["other"] * len(predicted)
        ids = to_list(batch["id"]) if "id" in batch else [None] * len(predicted)
        for key, choice, answers, answer_type, sample_id in zip(sample_keys(batch), predicted, human, types, ids):
            prediction = self.answers[choice]
            self.add(key, {
                "score": vqa_score(prediction, answers),
                "answer_type": str(answer_type),
                "answer": prediction,
                "question_id": int(sample_id) if isinstance(sample_id, (int, torch.Tensor)) else sample_id,
            })

    def summarize(self, records: list[Any]) -> dict[str, float]:
        require_records(records, "vqa_accuracy")
        return _summary([r["score"] for r in records], [r["answer_type"] for r in records])

    def results(self) -> list[dict]:
        """The official results-file entries [{"question_id", "answer"}] of the records."""
        return [{"question_id": r["question_id"], "answer": r["answer"]} for r in self.records()]


def _load_json(path: str | os.PathLike, what: str) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: cannot read the VQA {what} file ({error})") from None


def score_vqa_results(
    questions_json_path: str | os.PathLike,
    annotations_json_path: str | os.PathLike,
    results: list[dict],
) -> dict[str, float]:
    """Score an official results list [{"question_id", "answer"}] like the official evaluator.

    As there, the results must answer exactly the questions of the annotation file. Returns
    "vqa_accuracy", one "vqa_accuracy_<type>" per answer type and "num_questions".
    """
    questions = _load_json(questions_json_path, "questions").get("questions")
    annotations = _load_json(annotations_json_path, "annotations").get("annotations")
    if questions is None:
        raise ValueError(f"{questions_json_path}: no 'questions' list: is this a VQA questions file?")
    if annotations is None:
        raise ValueError(f"{annotations_json_path}: no 'annotations' list: is this a VQA annotations file?")
    question_ids = {q["question_id"] for q in questions}
    missing_questions = [a["question_id"] for a in annotations if a["question_id"] not in question_ids]
    if missing_questions:
        raise ValueError(f"{annotations_json_path}: {len(missing_questions)} annotated question ids are not in "
                         f"{questions_json_path} (first: {missing_questions[0]}): the files do not belong together")

    predictions: dict[Any, str] = {}
    for position, entry in enumerate(results):
        if not isinstance(entry, dict) or "question_id" not in entry or "answer" not in entry:
            raise ValueError(f"results entry {position} is not {{'question_id': int, 'answer': str}}: {entry!r}")
        if entry["question_id"] in predictions:
            raise ValueError(f"results answer question {entry['question_id']} more than once")
        predictions[entry["question_id"]] = str(entry["answer"])
    annotated = {a["question_id"] for a in annotations}
    if set(predictions) != annotated:
        extra = sorted(set(predictions) - annotated)[:3]
        absent = sorted(annotated - set(predictions))[:3]
        raise ValueError("results do not correspond to the annotation file: they must answer every annotated "
                         f"question and no other (unanswered e.g. {absent}, unknown e.g. {extra})")

    scores, types = [], []
    for annotation in annotations:
        entries = annotation["answers"]
        # the official evaluator tells annotations apart by comparing whole answer entries
        identities = [tuple(sorted((k, repr(v)) for k, v in e.items() if k != "answer")) for e in entries]
        human = [e["answer"] for e in entries]
        scores.append(_question_accuracy(predictions[annotation["question_id"]], human, identities))
        types.append(annotation["answer_type"])
    summary = _summary(scores, types)
    summary["num_questions"] = float(len(scores))
    return summary
