"""RefCOCO, RefCOCO+ and RefCOCOg over the COCO train2014 pool images."""

from __future__ import annotations

import os
import pickle

import numpy as np

from vlfw.world.coco import CATEGORIES, INFO, CocoImage, coco_annotation, image_entry
from vlfw.world.language import (
    RELATION_WORDS,
    SIZE_WORDS,
    article,
    color_word,
    distinguishing_words,
    location_word,
    pick,
    shape_word,
    tokenize,
)
from vlfw.world.pools import split_by_fraction, write_json
from vlfw.world.scene import SHAPES, Scene, make_rng, relation

LOCATION_PHRASES = {"leftmost": ["left", "leftmost", "on the left"], "rightmost": ["right", "rightmost", "on the right"],
                    "top": ["top", "upper", "at the top"], "bottom": ["bottom", "lower", "at the bottom"]}
ABSOLUTE_WORDS = {"left", "right", "leftmost", "rightmost", "top", "upper", "bottom", "lower"}


def _attribute_phrase(rng: np.random.Generator, scene: Scene, index: int, attrs: list[str]) -> str:
    o = scene.objects[index]
    words = []
    if "size" in attrs:
        words.append(pick(rng, SIZE_WORDS[o.size]))
    if "color" in attrs:
        words.append(color_word(rng, o.color))
    words.append(shape_word(rng, o.shape))
    return " ".join(words)


def _unique_partner(scene: Scene, index: int) -> tuple[int, str] | None:
    """Another object that is unique by colour+shape, and a relation from `index` to it."""
    for j, p in enumerate(scene.objects):
        if j != index and scene.matching(shape=p.shape, color=p.color) == [j]:
            rels = relation(scene.objects[index], p)
            if rels:
                return j, rels[0]
    return None


def expression(rng: np.random.Generator, scene: Scene, index: int, style: str) -> str | None:
    """A referring expression for object `index`: style 'refcoco', 'refcoco+' or 'refcocog'."""
    attrs = distinguishing_words(scene, index)
    o = scene.objects[index]
    if style == "refcoco":
        if attrs and rng.random() < 0.75:
            return _attribute_phrase(rng, scene, index, [a for a in attrs if a != "shape-only"] or
                                     (["color"] if rng.random() < 0.5 else []))
        loc = location_word(scene, index)
        if loc is None:
            return _attribute_phrase(rng, scene, index, ["color"]) if attrs else None
        where = pick(rng, LOCATION_PHRASES[loc])
        thing = _attribute_phrase(rng, scene, index, ["color"] if rng.random() < 0.5 else [])
        return f"{thing} {where}" if where.startswith(("on ", "at ")) else f"{where} {thing}"
    partner = _unique_partner(scene, index)
    if style == "refcoco+":
        if attrs and (rng.random() < 0.6 or partner is None):
            return _attribute_phrase(rng, scene, index, [a for a in attrs if a != "shape-only"])
        if partner is None:
            return None
        j, rel = partner
        if rel not in ("next to",) and rng.random() < 0.5:
            rel = "next to" if "next to" in relation(o, scene.objects[j]) else rel
        words = pick(rng, [w for w in RELATION_WORDS[rel] if not set(w.split()) & ABSOLUTE_WORDS] or ["near"])
        return f"{_attribute_phrase(rng, scene, index, ['color'])} {words} the {_attribute_phrase(rng, scene, j, ['color'])}"
    # refcocog: long, full sentences.
    head = article(_attribute_phrase(rng, scene, index, ["size", "color"]))
    if partner is not None:
        j, rel = partner
        tail = f"{pick(rng, ['that is', 'which is', 'placed'])} {pick(rng, RELATION_WORDS[rel])} " \
               f"{article(_attribute_phrase(rng, scene, j, ['color']))}"
    else:
        loc = location_word(scene, index)
        tail = (f"that is the {loc} one of its kind" if loc
                else f"among {len(scene.objects) - 1} other shapes")
    text = f"{head} {tail}"
    return text[0].upper() + text[1:] + ("." if rng.random() < 0.6 else "")


def _refs_for(rng: np.random.Generator, images: list[CocoImage], splits: list[str], style: str,
              families: dict[str, str], counters: dict[str, int]) -> list[dict]:
    refs = []
    for img, split in zip(images, splits):
        candidates = [i for i, o in enumerate(img.scene.objects)
                      if split not in families or o.family == families[split]]
        for i in [candidates[int(k)] for k in rng.permutation(len(candidates))[:3]]:
            sentences = []
            for _ in range(int(rng.integers(1, 4))):
                raw = expression(rng, img.scene, i, style)
                if raw is None:
                    continue
                tokens = tokenize(raw)
                sentences.append({"tokens": tokens, "raw": raw, "sent": " ".join(tokens),
                                  "sent_id": counters["sent"]})
                counters["sent"] += 1
            if not sentences:
                continue
            obj = img.scene.objects[i]
            ann_id = img.annotation_ids[i]
            refs.append({"image_id": img.image_id, "split": split, "sentences": sentences,
                         "file_name": f"COCO_train2014_{img.image_id:012d}_{ann_id}.jpg",
                         "category_id": SHAPES.index(obj.shape) + 1, "ann_id": ann_id,
                         "sent_ids": [s["sent_id"] for s in sentences], "ref_id": counters["ref"]})
            counters["ref"] += 1
    return refs


def _write_dataset(root: str, name: str, images: list[CocoImage], refs_by_split: dict[str, list[dict]]) -> dict:
    folder = os.path.join(root, "refcoco", name)
    os.makedirs(folder, exist_ok=True)
    used = sorted({r["image_id"] for refs in refs_by_split.values() for r in refs})
    chosen = [img for img in images if img.image_id in set(used)]
    write_json(os.path.join(folder, "instances.json"), {
        "info": INFO, "images": [image_entry(img) for img in chosen],
        "annotations": [coco_annotation(img, i) for img in chosen for i in range(len(img.scene.objects))],
        "categories": CATEGORIES})
    counts = {}
    for split_by, refs in refs_by_split.items():
        with open(os.path.join(folder, f"refs({split_by}).p"), "wb") as f:
            pickle.dump(refs, f, protocol=2)
        counts[split_by] = len(refs)
    return counts


def write_refcoco(root: str, images: list[CocoImage], seed: int) -> dict:
    rng = make_rng(seed, "refcoco")
    train = [img for img in images if img.subset == "train2014"]
    n = len(train)
    first = train[: max(4, int(n * 0.6))]
    second = train[n - max(4, int(n * 0.6)):]
    families = {"testA": "round", "testB": "angular"}
    unc = split_by_fraction(len(first), rng, {"train": 0.7, "val": 0.1, "testA": 0.1, "testB": 0.1})
    google = split_by_fraction(len(first), rng, {"train": 0.8, "val": 0.1, "test": 0.1})
    umd = split_by_fraction(len(second), rng, {"train": 0.8, "val": 0.1, "test": 0.1})
    google_g = split_by_fraction(len(second), rng, {"train": 0.9, "val": 0.1})
    counts = {}
    c = {"ref": 0, "sent": 0}
    counts["refcoco"] = _write_dataset(root, "refcoco", images, {
        "unc": _refs_for(rng, first, unc, "refcoco", families, c),
        "google": _refs_for(rng, first, google, "refcoco", {}, {"ref": 0, "sent": 0})})
    counts["refcoco+"] = _write_dataset(root, "refcoco+", images, {
        "unc": _refs_for(rng, first, unc, "refcoco+", families, {"ref": 0, "sent": 0})})
    counts["refcocog"] = _write_dataset(root, "refcocog", images, {
        "umd": _refs_for(rng, second, umd, "refcocog", {}, {"ref": 0, "sent": 0}),
        "google": _refs_for(rng, second, google_g, "refcocog", {}, {"ref": 0, "sent": 0})})
    return counts
