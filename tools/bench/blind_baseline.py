"""Does the Shapes world need the image? Trains the blind (text_only) and the late-fusion
baselines on Shapes VQA v2 and compares both with the majority-answer rate on validation.

    python tools/bench/blind_baseline.py --size default --updates 1500 [--save-dir DIR]

The late-fusion model is trained twice: from the 96 px images (its own small CNN,
projects/baselines/shapes_vqa2.yaml) and from the world's detector region features
(projects/baselines/shapes_vqa2_regions.yaml); every run gets the same updates, batch and lr.

Two majority rates, both learned on the TRAIN annotations and scored with the official VQA
accuracy on the VAL questions: the single most frequent answer, and the most frequent answer
per question type (the "prior per question type" baseline of the VQA paper, which is what a
blind model can at best learn from a world whose answers are balanced per template).
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
import time

from vlfw.config import load_config
from vlfw.metrics.vqa import score_vqa_results
from vlfw.runner import run
from vlfw.world import ensure_world
from vlfw.world.layout import benchmark_paths


def majority_rates(data_dir: str) -> tuple[float, float]:
    """(single most frequent answer, most frequent answer per question type) accuracy on val."""
    with open(os.path.join(data_dir, "v2_mscoco_train2014_annotations.json")) as f:
        train = json.load(f)["annotations"]
    overall = collections.Counter(a["multiple_choice_answer"] for a in train).most_common(1)[0][0]
    by_type: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for a in train:
        by_type[a["question_type"]][a["multiple_choice_answer"]] += 1
    questions = os.path.join(data_dir, "v2_OpenEnded_mscoco_val2014_questions.json")
    annotations = os.path.join(data_dir, "v2_mscoco_val2014_annotations.json")
    with open(annotations) as f:
        val = json.load(f)["annotations"]
    rates = []
    for pick in (lambda a: overall,
                 lambda a: by_type[a["question_type"]].most_common(1)[0][0] if by_type[a["question_type"]] else overall):
        results = [{"question_id": a["question_id"], "answer": pick(a)} for a in val]
        rates.append(score_vqa_results(questions, annotations, results)["vqa_accuracy"])
    return rates[0], rates[1]


def train(recipe: str, model: str, size: str, updates: int, save_dir: str, batch_size: int, lr: float,
          name: str, seed: int = 1) -> float:
    config = load_config([
        f"config=projects/baselines/{recipe}", f"model={model}", f"dataset_config.vqa2.shapes.size={size}",
        f"training.max_updates={updates}", f"training.batch_size={batch_size}", f"optimizer.lr={lr}",
        f"training.eval_every={updates}", f"training.checkpoint_every={updates}", "run_type=train_val",
        f"save_dir={save_dir}/{name}", "training.progress_bar=false", f"seed={seed}",
    ])
    return run(config)["val/vqa2/vqa_accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="default")
    parser.add_argument("--updates", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--save-dir", default=None)
    parser.add_argument("--seed", type=int, default=1, help="the training seed (the world's is 0)")
    parser.add_argument("--only", nargs="*", default=None,
                        choices=["text_only", "late_fusion", "late_fusion_regions"], help="run only these models")
    args = parser.parse_args()
    save_dir = args.save_dir or tempfile.mkdtemp(prefix="vlfw-blind-")
    root = ensure_world(args.size, seed=0)
    overall, per_type = majority_rates(benchmark_paths(root, "vqa2")["data_dir"])
    rows = [("majority answer", overall, 0.0), ("majority answer per question type", per_type, 0.0)]
    runs = {"text_only": ("text_only (blind)", "shapes_vqa2.yaml", "text_only"),
            "late_fusion": ("late_fusion, images", "shapes_vqa2.yaml", "late_fusion"),
            "late_fusion_regions": ("late_fusion, region features", "shapes_vqa2_regions.yaml", "late_fusion")}
    for key in args.only or list(runs):
        name, recipe, model = runs[key]
        start = time.time()
        accuracy = train(recipe, model, args.size, args.updates, save_dir, args.batch_size, args.lr, key, args.seed)
        rows.append((name, accuracy, time.time() - start))
    print(f"\nShapes `{args.size}` VQA v2, val split, {args.updates} updates of batch {args.batch_size}, "
          f"seed {args.seed}\n")
    print("| model | VQA accuracy (val) | train+eval time (s) |\n|---|---|---|")
    for name, accuracy, seconds in rows:
        print(f"| {name} | {accuracy:.2f} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
