"""Checks that a generated Shapes world measures what it claims: text alone must not give the
label away, and referring expressions must fit exactly one object.

- `text_only_accuracy`: a bag-of-words-and-bigrams softmax regression trained on texts alone;
  `snli_ve_hypothesis_only` and `nlvr2_text_only` apply it to a world's files (train -> dev).
- `refcoco_ambiguity`: reads every RefCOCO/+/g expression from disk, parses its meaning
  (vlfw.world.referents.parse_expression) and counts the expressions that fit zero or several
  objects of the planned scene.

CLI: tools/bench/world_checks.py.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch

from vlfw.datasets.refcoco import load_refs
from vlfw.world.language import tokenize
from vlfw.world.referents import fits, parse_expression


def ngrams(text: str) -> list[str]:
    """Lower-cased words and word bigrams (with sentence boundaries) of `text`."""
    words = ["<s>"] + tokenize(text) + ["</s>"]
    return words[1:-1] + [f"{a} {b}" for a, b in zip(words, words[1:])]


def text_only_accuracy(train_texts: list[str], train_labels: list[str], test_texts: list[str],
                       test_labels: list[str], steps: int = 200, weight_decay: float = 1e-4,
                       seed: int = 0) -> dict[str, float]:
    """Held-out accuracy (%) of a softmax regression on binary n-gram features, and the majority rate.

    The vocabulary is the n-grams seen at least twice in train; labels unseen in train count as wrong.
    """
    counts: dict[str, int] = {}
    for t in train_texts:
        for g in set(ngrams(t)):
            counts[g] = counts.get(g, 0) + 1
    vocab = {g: k for k, g in enumerate(sorted(g for g, c in counts.items() if c >= 2))}
    classes = sorted(set(train_labels))

    def featurise(texts: list[str]) -> torch.Tensor:
        x = torch.zeros(len(texts), len(vocab) + 1)
        x[:, -1] = 1.0  # bias
        for i, t in enumerate(texts):
            for g in ngrams(t):
                if g in vocab:
                    x[i, vocab[g]] = 1.0
        return x

    xtr, xte = featurise(train_texts), featurise(test_texts)
    ytr = torch.tensor([classes.index(y) for y in train_labels])
    torch.manual_seed(seed)
    w = torch.zeros(xtr.shape[1], len(classes), requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xtr @ w, ytr) + weight_decay * w[:-1].square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        pred = (xte @ w).argmax(1).tolist()
    right = sum(classes[p] == y for p, y in zip(pred, test_labels))
    majority = max(test_labels.count(c) for c in set(test_labels))
    return {"accuracy": 100.0 * right / len(test_labels), "majority": 100.0 * majority / len(test_labels),
            "train": len(train_texts), "test": len(test_texts), "vocab": len(vocab)}


def _jsonl(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def snli_ve_hypothesis_only(root: str) -> dict[str, float]:
    """Hypothesis-only accuracy on SNLI-VE dev after training on train (chance is 33.3%)."""
    train = _jsonl(os.path.join(root, "snli_ve", "snli_ve_train.jsonl"))
    dev = _jsonl(os.path.join(root, "snli_ve", "snli_ve_dev.jsonl"))
    return text_only_accuracy([r["sentence2"] for r in train], [r["gold_label"] for r in train],
                              [r["sentence2"] for r in dev], [r["gold_label"] for r in dev])


def nlvr2_text_only(root: str) -> dict[str, float]:
    """Statement-only accuracy on NLVR2 dev after training on train, plus sizes and the True share."""
    rows = {s: _jsonl(os.path.join(root, "nlvr2", f"{s}.json")) for s in ("train", "dev", "test1")}
    result = text_only_accuracy([r["sentence"] for r in rows["train"]], [r["label"] for r in rows["train"]],
                                [r["sentence"] for r in rows["dev"]], [r["label"] for r in rows["dev"]])
    for split, split_rows in rows.items():
        result[f"{split}_examples"] = len(split_rows)
        result[f"{split}_sets"] = len({r["identifier"].split("-")[1] for r in split_rows})
        result[f"{split}_true"] = 100.0 * sum(r["label"] == "True" for r in split_rows) / max(1, len(split_rows))
    return result


def planned_scenes(size: str, seed: int, questions_per_image: int = 4, image_size: int = 128) -> dict:
    """image_id -> Scene of the COCO pool of the world of `size` and `seed` (planning only, no rendering)."""
    from vlfw.world.coco import plan_vqa_images
    from vlfw.world.generate import resolve_size

    images = plan_vqa_images(seed, resolve_size(size)["coco"], questions_per_image, image_size, image_size)
    return {img.image_id: img.scene for img in images}


def refcoco_ambiguity(root: str, scenes: dict, annotation_ids: dict | None = None) -> dict[str, dict]:
    """Per dataset and splitBy: expressions, how many fit no object, several objects, or another object.

    `scenes` maps image_id -> Scene (see `planned_scenes`); the referent is found through the
    ref's `ann_id` in the dataset's instances.json (annotations are listed per image in object order).
    """
    out: dict[str, dict] = {}
    for dataset in ("refcoco", "refcoco+", "refcocog"):
        folder = os.path.join(root, "refcoco", dataset)
        with open(os.path.join(folder, "instances.json"), encoding="utf-8") as f:
            anns = json.load(f)["annotations"]
        index_of: dict[int, int] = {}
        per_image: dict[int, int] = {}
        for a in anns:
            index_of[a["id"]] = per_image.get(a["image_id"], 0)
            per_image[a["image_id"]] = index_of[a["id"]] + 1
        for name in sorted(os.listdir(folder)):
            if not name.startswith("refs("):
                continue
            refs = load_refs(os.path.join(folder, name))  # restricted unpickler: runs no code
            stats = {"expressions": 0, "none": 0, "several": 0, "other": 0, "unparsed": 0}
            for r in refs:
                scene = scenes[r["image_id"]]
                target = index_of[r["ann_id"]]
                for s in r["sentences"]:
                    stats["expressions"] += 1
                    m = parse_expression(s["raw"])
                    if m is None:
                        stats["unparsed"] += 1
                        continue
                    found = fits(scene, m)
                    if not found:
                        stats["none"] += 1
                    elif len(found) > 1:
                        stats["several"] += 1
                    elif found != [target]:
                        stats["other"] += 1
            bad = stats["none"] + stats["several"] + stats["other"] + stats["unparsed"]
            stats["not_unique_percent"] = 100.0 * bad / max(1, stats["expressions"])
            out[f"{dataset} {name[5:-3]}"] = stats
    return out


def label_counts(values: list[str]) -> dict[str, int]:
    return {v: int(c) for v, c in zip(*np.unique(np.asarray(values), return_counts=True))}
