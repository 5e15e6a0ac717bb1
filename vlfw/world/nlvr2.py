"""NLVR2: statements about a pair of images, several pairs per sentence, several sentences per set."""

from __future__ import annotations

import os
from typing import Callable

import numpy as np

from vlfw.world.language import NUMBER_WORDS, article, color_word, pick, plural, shape_word, vary_case
from vlfw.world.pools import ImagePool, write_jsonl
from vlfw.world.scene import COLOR_NAMES, SHAPES, Scene, make_rng, relation, sample_scene

Statement = tuple[str, Callable[[Scene, Scene], bool]]
SPLITS = ["train", "dev", "test1"]


def _number(rng: np.random.Generator, n: int) -> str:
    return NUMBER_WORDS[n] if rng.random() < 0.8 else str(n)


def candidate_statement(rng: np.random.Generator, shapes: list[str], colors: list[str],
                        pairs: list[tuple[Scene, Scene]]) -> Statement:
    """A random statement over the set's palette, with the function that decides it."""
    s, c = pick(rng, shapes), pick(rng, colors)
    noun, cw = shape_word(rng, s), color_word(rng, c)
    form = int(rng.integers(6))
    if form == 0:
        left, right = pairs[int(rng.integers(len(pairs)))]
        n = max(1, left.count(s, c) + right.count(s, c) + int(rng.integers(-1, 2)))
        text = f"there are exactly {_number(rng, n)} {cw} {plural(noun) if n > 1 else noun} in total"
        return text, lambda a, b: a.count(s, c) + b.count(s, c) == n
    if form == 1:
        side = pick(rng, ["left", "right"])
        other = "right" if side == "left" else "left"
        text = f"the {side} image contains more {plural(noun)} than the {other} image"
        if side == "left":
            return text, lambda a, b: a.count(shape=s) > b.count(shape=s)
        return text, lambda a, b: b.count(shape=s) > a.count(shape=s)
    if form == 2:
        text = pick(rng, [f"both images contain {article(cw + ' ' + noun)}",
                          f"each image has at least one {cw} {noun}"])
        return text, lambda a, b: a.count(s, c) > 0 and b.count(s, c) > 0
    if form == 3:
        text = f"exactly one image has {article(cw + ' ' + noun)} in it"
        return text, lambda a, b: (a.count(s, c) > 0) != (b.count(s, c) > 0)
    if form == 4:
        side = pick(rng, ["left", "right"])
        n = int(rng.integers(1, 4))
        text = f"the {side} image shows at least {_number(rng, n)} {cw} {'objects' if n > 1 else 'object'}"
        if side == "left":
            return text, lambda a, b: a.count(color=c) >= n
        return text, lambda a, b: b.count(color=c) >= n
    s2 = pick(rng, shapes)
    rel = pick(rng, ["left of", "above", "next to"])
    text = f"in one of the images {article(noun)} is {rel} {article(shape_word(rng, s2))}"

    def holds(a: Scene, b: Scene) -> bool:
        return any(rel in relation(x, y) for sc in (a, b) for x in sc.objects for y in sc.objects
                   if x is not y and x.shape == s and y.shape == s2)
    return text, holds


def write_nlvr2(root: str, seed: int, sets: dict[str, int], pairs_per_set: int, pool: ImagePool,
                width: int = 128, height: int = 128) -> dict:
    rng = make_rng(seed, "nlvr2")
    counts = {}
    set_id = 0
    for split in SPLITS:
        rows = []
        for _ in range(sets[split]):
            set_id += int(rng.integers(1, 30))
            shapes = [SHAPES[int(i)] for i in rng.permutation(len(SHAPES))[:3]]
            colors = [COLOR_NAMES[int(i)] for i in rng.permutation(len(COLOR_NAMES))[:2]]
            pairs = [(sample_scene(rng, width, height, shapes=shapes, colors=colors),
                      sample_scene(rng, width, height, shapes=shapes, colors=colors)) for _ in range(pairs_per_set)]
            directory = set_id % 100
            for pair_id, (left, right) in enumerate(pairs):
                for side, scene in enumerate((left, right)):
                    name = f"{split}-{set_id}-{pair_id}-img{side}"
                    folder = (os.path.join(root, "nlvr2", "images", "train", str(directory)) if split == "train"
                              else os.path.join(root, "nlvr2", split))
                    pool.add(os.path.join(folder, name + ".png"), scene, name)
            for sent_id in range(int(rng.integers(2, 4))):
                # Prefer statements whose truth differs across the pairs: balanced labels, meaningful consistency.
                options = [candidate_statement(rng, shapes, colors, pairs) for _ in range(10)]
                scored = [(abs(np.mean([f(a, b) for a, b in pairs]) - 0.5), k) for k, (_, f) in enumerate(options)]
                text, decide = options[min(scored)[1]]
                sentence = vary_case(rng, text) + ("." if rng.random() < 0.9 else "")
                for pair_id, (left, right) in enumerate(pairs):
                    row = {"validation": {}, "sentence": sentence,
                           "left_url": f"https://shapes.invalid/nlvr2/{split}/{set_id}/{pair_id}/0.png",
                           "writer": f"w{int(rng.integers(1, 40))}", "label": "True" if decide(left, right) else "False",
                           "right_url": f"https://shapes.invalid/nlvr2/{split}/{set_id}/{pair_id}/1.png",
                           "synset": f"n0{int(rng.integers(1000000, 9999999))} {shapes[0]}",
                           "query": f"{colors[0]} {shapes[0]} {pair_id}",
                           "identifier": f"{split}-{set_id}-{pair_id}-{sent_id}", "extra_validations": {}}
                    if split == "train":
                        row["directory"] = directory
                    rows.append(row)
        write_jsonl(os.path.join(root, "nlvr2", f"{split}.json"), rows)
        counts[split] = len(rows)
    return counts
