"""vlfw_score: score a prediction file in a benchmark's official submission format.

    vlfw_score vqa2  --data-dir DIR --split val2014 --predictions results.json
    vlfw_score nlvr2 --data-dir DIR --split dev     --predictions predictions.csv

Prints a small table and then the scores as one JSON line. A missing file or a malformed
prediction file is one error line and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Sequence

from vlfw.cli.common import guarded_main
from vlfw.errors import DataError

BENCHMARKS = ("vqa2", "nlvr2")


def _require(path: str, what: str) -> str:
    if not os.path.isfile(path):
        raise DataError(f"{what} not found: {path}")
    return path


def score_vqa2(data_dir: str, split: str, predictions: str) -> dict[str, float]:
    from vlfw.datasets.vqa2 import annotation_file, question_file
    from vlfw.metrics.vqa import score_vqa_results

    questions = _require(question_file(data_dir, split), f"VQA {split} questions")
    annotations = _require(annotation_file(data_dir, split), f"VQA {split} annotations (test splits cannot be scored locally)")
    _require(predictions, "predictions file")
    try:
        with open(predictions, encoding="utf-8") as handle:
            results = json.load(handle)
    except json.JSONDecodeError as error:
        raise DataError(f"{predictions}: not valid JSON at line {error.lineno} column {error.colno} ({error.msg})") from None
    if not isinstance(results, list):
        raise DataError(f"{predictions}: expected a JSON list of {{\"question_id\", \"answer\"}} entries")
    try:
        return score_vqa_results(questions, annotations, results)
    except ValueError as error:
        raise DataError(f"{predictions}: {error}") from None


def score_nlvr2(data_dir: str, split: str, predictions: str) -> dict[str, float]:
    from vlfw.datasets.nlvr2 import read_predictions_csv
    from vlfw.datasets.records import BadRecordCounter, iter_json_lines
    from vlfw.metrics.classification import nlvr2_sentence_key

    labels_path = _require(os.path.join(data_dir, f"{split}.json"), f"NLVR2 {split} labels")
    _require(predictions, "predictions file")
    labels: dict[str, bool] = {}
    for number, row in iter_json_lines(labels_path, BadRecordCounter(False, "nlvr2")):
        if str(row.get("label")) not in ("True", "False") or "identifier" not in row:
            raise DataError(f"{labels_path}: line {number}: no identifier or True/False label")
        labels[str(row["identifier"])] = str(row["label"]) == "True"
    predicted = read_predictions_csv(predictions)
    missing = [i for i in labels if i not in predicted]
    extra = [i for i in predicted if i not in labels]
    if missing or extra:
        raise DataError(f"{predictions}: predictions must cover exactly the {len(labels)} examples of {labels_path} "
                        f"({len(missing)} missing, e.g. {missing[:3]}; {len(extra)} unknown, e.g. {extra[:3]})")
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


def print_table(benchmark: str, split: str, scores: dict[str, float]) -> None:
    width = max(len(k) for k in scores)
    print(f"{benchmark} {split}")
    for key, value in scores.items():
        print(f"  {key:<{width}}  {value:g}")
    print(json.dumps({"benchmark": benchmark, "split": split, **scores}, sort_keys=True))


def _body(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="vlfw_score", description="Score a prediction file in a benchmark's "
                                     "official submission format against the native annotations.")
    parser.add_argument("benchmark", choices=BENCHMARKS)
    parser.add_argument("--data-dir", required=True, help="the benchmark's data_dir (annotation files)")
    parser.add_argument("--split", required=True, help="native split name: val2014 (VQA), dev or test1 (NLVR2)")
    parser.add_argument("--predictions", required=True, help="VQA results JSON or NLVR2 identifier,prediction CSV")
    parser.add_argument("--debug", action="store_true", help="full tracebacks")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.data_dir):
        raise DataError(f"--data-dir {args.data_dir} is not a directory")
    scorer = score_vqa2 if args.benchmark == "vqa2" else score_nlvr2
    print_table(args.benchmark, args.split, scorer(args.data_dir, args.split, args.predictions))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return guarded_main("vlfw_score", _body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
