"""VCR: multiple-choice questions, answers and rationales whose tokens point at detected objects."""

from __future__ import annotations

import json
import os

import numpy as np

from vlfw.world.language import NUMBER_WORDS, pick
from vlfw.world.pools import ImagePool, write_jsonl
from vlfw.world.scene import COLOR_NAMES, Scene, make_rng, polygon_points, relation, sample_scene

MOVIES = ["1001_Shapes_In_Motion", "1002_The_Red_Circle", "1003_Triangle_Trouble", "1004_Star_Crossed"]
SPLITS = ["train", "val", "test"]


def _qa(rng: np.random.Generator, scene: Scene) -> tuple[list, list[list], int, list[list], int]:
    """(question tokens, 4 answers, answer label, 4 rationales, rationale label)."""
    objs = scene.objects
    i = int(rng.integers(len(objs)))
    o = objs[i]
    kind = int(rng.integers(3))
    if kind == 0:
        question = ["What", "colour", "is", [i], "?"]
        wrong = [c for c in COLOR_NAMES if c != o.color]
        values = [o.color] + [wrong[int(k)] for k in rng.permutation(len(wrong))[:3]]
        answers = [[[i], "is"] + v.split() + ["."] for v in values]
        rationale_values = [(o.size, o.color)] + [(o.size, v) for v in values[1:]]
        rationales = [[[i], "looks", "like", "a", s] + c.split() + [o.shape, "."] for s, c in rationale_values]
    elif kind == 1 and len(objs) > 1:
        j = int((i + 1 + rng.integers(len(objs) - 1)) % len(objs))
        true = relation(o, objs[j])
        true = [r for r in true if r != "next to"] + (["next to"] if "next to" in true else ["far from"])
        r = pick(rng, true)
        wrong = [x for x in ["left of", "right of", "above", "below", "next to", "far from"] if x not in true]
        values = [r] + [wrong[int(k)] for k in rng.permutation(len(wrong))[:3]]
        question = ["Where", "is", [i], "relative", "to", [j], "?"]
        answers = [[[i], "is"] + v.split() + [[j], "."] for v in values]
        rationales = [["Because", [i], "is", "drawn"] + v.split() + [[j], "in", "the", "scene", "."] for v in values]
    else:
        same = scene.matching(shape=o.shape)
        n = len(same)
        values = [n] + [v for v in rng.permutation([x for x in range(1, 7) if x != n])[:3].tolist()]
        question = ["How", "many", o.shape + "s", "are", "there", "?"]
        answers = [["There", "are", NUMBER_WORDS[v], "."] if v != 1 else ["There", "is", "one", "."] for v in values]
        rationales = [["I", "can", "count", same if v == n else sorted(int(k) for k in
                       rng.choice(len(objs), size=min(v, len(objs)), replace=False)), "."] for v in values]
        rationales[0] = ["I", "can", "count", same, "in", "the", "picture", "."]
    order = rng.permutation(4)
    answers = [answers[int(k)] for k in order]
    answer_label = int(np.argmin(order))
    rorder = rng.permutation(4)
    rationales = [rationales[int(k)] for k in rorder]
    return question, answers, answer_label, rationales, int(np.argmin(rorder))


def _text(tokens: list, names: list[str]) -> str:
    return " ".join(t if isinstance(t, str) else " and ".join(f"{names[k]}{k}" for k in t) for t in tokens)


def write_vcr(root: str, seed: int, counts: dict[str, int], pool: ImagePool,
              width: int = 128, height: int = 128) -> dict:
    rng = make_rng(seed, "vcr")
    base = os.path.join(root, "vcr")
    written, annot = {}, 0
    for split in SPLITS:
        rows = []
        for n in range(counts[split]):
            movie = MOVIES[int(rng.integers(len(MOVIES)))]
            scene = sample_scene(rng, width, height)
            name = f"{movie}_{split}_{n:05d}@{int(rng.integers(0, 5))}"
            names = [o.shape for o in scene.objects]
            os.makedirs(os.path.join(base, "vcr1images", movie), exist_ok=True)
            pool.add(os.path.join(base, "vcr1images", movie, name + ".jpg"), scene, name)
            meta = {"boxes": [[round(v, 2) for v in o.box] + [round(float(rng.uniform(0.9, 1.0)), 4)]
                              for o in scene.objects],
                    "segms": [[[[round(x, 1), round(y, 1)] for x, y in polygon_points(o)]] for o in scene.objects],
                    "names": names, "width": scene.width, "height": scene.height}
            with open(os.path.join(base, "vcr1images", movie, name + ".json"), "w", encoding="utf-8") as f:
                json.dump(meta, f, separators=(",", ":"))
            for qn in range(2):
                question, answers, alabel, rationales, rlabel = _qa(rng, scene)
                row = {"movie": movie, "objects": names, "interesting_scores": [int(rng.integers(-1, 3))],
                       "answer_likelihood": pick(rng, ["likely", "possible", "unlikely"]),
                       "img_fn": f"{movie}/{name}.jpg", "metadata_fn": f"{movie}/{name}.json",
                       "answer_orig": _text(answers[alabel], names), "question_orig": _text(question, names),
                       "rationale_orig": _text(rationales[rlabel], names), "question": question,
                       "answer_match_iter": [int(v) for v in rng.integers(0, 4, size=3)],
                       "answer_sources": [int(v) for v in rng.integers(0, 50000, size=4)],
                       "answer_choices": answers, "answer_label": alabel,
                       "rationale_choices": rationales,
                       "rationale_sources": [int(v) for v in rng.integers(0, 50000, size=4)],
                       "rationale_match_iter": [int(v) for v in rng.integers(0, 4, size=3)],
                       "rationale_label": rlabel, "img_id": f"{split}-{n}", "question_number": qn,
                       "annot_id": f"{split}-{annot}", "match_fold": f"{split}-{n % 4}", "match_index": annot}
                annot += 1
                if split == "test":
                    del row["answer_label"], row["rationale_label"]
                rows.append(row)
        write_jsonl(os.path.join(base, f"{split}.jsonl"), rows)
        written[split] = len(rows)
    return written
