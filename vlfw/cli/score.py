"""vlfw_score: score a prediction file (the official submission format, or the de-facto standard
one) against a benchmark's native annotations, exactly as the in-run metric scores it.

    vlfw_score vqa2            --data-dir DIR --split val2014     --predictions vqa2_test.json
    vlfw_score nlvr2           --data-dir DIR --split dev         --predictions nlvr2_test.csv
    vlfw_score refcoco         --data-dir DIR --split testA,testB --predictions refcoco_test.json
    vlfw_score coco_retrieval  --data-dir DIR --split test        --predictions coco_retrieval_test.json

Benchmarks: vlfw.datasets.scoring.SCORERS (and the FIBER dense builders' names). Prints a small
table and then the scores as one JSON line. A missing file, a malformed prediction file or one
that does not cover exactly the split's examples is one error line and exit status 2.
"""

from __future__ import annotations

import argparse
import json
from typing import Sequence

from vlfw.cli.common import guarded_main
from vlfw.datasets.scoring import ALIASES, SCORERS, score_file, score_nlvr2, score_vqa2  # noqa: F401

BENCHMARKS = tuple(SCORERS) + tuple(ALIASES)


def print_table(benchmark: str, split: str, scores: dict[str, float]) -> None:
    width = max(len(k) for k in scores)
    print(f"{benchmark} {split}")
    for key, value in scores.items():
        print(f"  {key:<{width}}  {value:g}")
    print(json.dumps({"benchmark": benchmark, "split": split, **scores}, sort_keys=True))


def _body(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="vlfw_score", description="Score a prediction file in a benchmark's "
                                     "submission format against the native annotations.")
    parser.add_argument("benchmark", help=f"one of: {', '.join(BENCHMARKS)}")  # unknown: one line from score_file
    parser.add_argument("--data-dir", required=True, help="the benchmark's data_dir (its annotation files)")
    parser.add_argument("--split", required=True,
                        help="native split name: val2014 (VQA), dev (NLVR2, SNLI-VE), val / testA / testB / test, "
                             "comma separated for several (RefCOCO*), val (VCR), test (Karpathy, Flickr30k Entities)")
    parser.add_argument("--predictions", required=True, help="the prediction file the evaluation wrote")
    parser.add_argument("--debug", action="store_true", help="full tracebacks")
    args = parser.parse_args(argv)
    print_table(args.benchmark, args.split, score_file(args.benchmark, args.data_dir, args.split, args.predictions))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return guarded_main("vlfw_score", _body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
