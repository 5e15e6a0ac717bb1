"""RefCOCO, RefCOCO+ and RefCOCOg over the COCO train2014 pool images."""

from __future__ import annotations

import os
import pickle

import numpy as np

from vlfw.world.coco import CATEGORIES, INFO, CocoImage, coco_annotation, image_entry
from vlfw.world.language import RELATION_WORDS, SIZE_WORDS, article, color_word, pick, shape_word, tokenize
from vlfw.world.pools import split_by_fraction, write_json
from vlfw.world.referents import LOCATION_PHRASES, fits, meaning
from vlfw.world.scene import SHAPES, Scene, make_rng, relation

ABSOLUTE_WORDS = {"left", "right", "leftmost", "rightmost", "top", "upper", "bottom", "lower"}
ATTRIBUTE_SETS = [(), ("color",), ("size",), ("size", "color")]
ATTEMPTS = 12  # wordings tried per sentence before the sentence is dropped


def _attribute_phrase(rng: np.random.Generator, scene: Scene, index: int, attrs: list[str] | tuple[str, ...]
                      ) -> tuple[str, dict]:
    """('large red circle', its meaning) with the attributes `attrs` of object `index` (shape always)."""
    o = scene.objects[index]
    words = []
    if "size" in attrs:
        words.append(pick(rng, SIZE_WORDS[o.size]))
    if "color" in attrs:
        words.append(color_word(rng, o.color))
    words.append(shape_word(rng, o.shape))
    return " ".join(words), meaning(o.shape, o.color if "color" in attrs else None,
                                    o.size if "size" in attrs else None)


def _unique_attrs(scene: Scene, index: int) -> list[tuple[str, ...]]:
    """The attribute sets with which the plain noun phrase picks out only `index`."""
    o = scene.objects[index]
    return [attrs for attrs in ATTRIBUTE_SETS
            if fits(scene, meaning(o.shape, o.color if "color" in attrs else None,
                                   o.size if "size" in attrs else None)) == [index]]


def _partners(scene: Scene, index: int, allowed: set[str] | None = None) -> list[tuple[int, str]]:
    """(j, relation) with j unique by colour + shape and the relation holding from `index` to j."""
    out = []
    for j, p in enumerate(scene.objects):
        if j != index and scene.matching(shape=p.shape, color=p.color) == [j]:
            out += [(j, r) for r in relation(scene.objects[index], p) if allowed is None or r in allowed]
    return out


def _relation_words(rng: np.random.Generator, rel: str, absolute: bool) -> str:
    words = RELATION_WORDS[rel] if absolute else [w for w in RELATION_WORDS[rel] if not set(w.split()) & ABSOLUTE_WORDS]
    return pick(rng, words)


def _candidate(rng: np.random.Generator, scene: Scene, index: int, style: str, unique: list[tuple[str, ...]],
               partners: list[tuple[int, str]]) -> tuple[str, dict] | None:
    """One random wording for object `index` and its meaning; it may fit other objects too.
    `unique`: `_unique_attrs` of the object; `partners`: its `_partners` (for refcoco+ without left/right)."""
    if style == "refcoco":
        if unique and rng.random() < 0.75:
            return _attribute_phrase(rng, scene, index, unique[int(rng.integers(len(unique)))])
        thing, m = _attribute_phrase(rng, scene, index, ("color",) if rng.random() < 0.5 else ())
        loc = pick(rng, list(LOCATION_PHRASES))
        where = pick(rng, LOCATION_PHRASES[loc])
        m["location"] = loc
        return (f"{thing} {where}" if where.startswith(("on ", "at ")) else f"{where} {thing}"), m
    if style == "refcoco+":
        if unique and (rng.random() < 0.6 or not partners):
            return _attribute_phrase(rng, scene, index, unique[int(rng.integers(len(unique)))])
        if not partners:
            return None
        j, rel = partners[int(rng.integers(len(partners)))]
        head, m = _attribute_phrase(rng, scene, index, ("color",))
        tail, pm = _attribute_phrase(rng, scene, j, ("color",))
        m["relation"] = (rel, pm)
        return f"{head} {_relation_words(rng, rel, absolute=False)} the {tail}", m
    # refcocog: long, full sentences.
    head, m = _attribute_phrase(rng, scene, index, ("size", "color"))
    head = article(head)
    form = rng.random()
    if partners and form < 0.6:
        j, rel = partners[int(rng.integers(len(partners)))]
        tail, pm = _attribute_phrase(rng, scene, j, ("color",))
        m["relation"] = (rel, pm)
        tail = f"{pick(rng, ['that is', 'which is', 'placed'])} {pick(rng, RELATION_WORDS[rel])} {article(tail)}"
    elif form < 0.8:
        loc = pick(rng, list(LOCATION_PHRASES))
        m["location"] = loc
        tail = f"that is the {loc} one of its kind"
    else:
        tail = f"among {len(scene.objects) - 1} other shapes"
    text = f"{head} {tail}"
    return text[0].upper() + text[1:] + ("." if rng.random() < 0.6 else ""), m


def expression(rng: np.random.Generator, scene: Scene, index: int, style: str) -> tuple[str, dict] | None:
    """A referring expression for object `index` (style 'refcoco', 'refcoco+' or 'refcocog') that fits
    only that object, with its meaning (see vlfw.world.referents); None when no wording tried does."""
    unique = _unique_attrs(scene, index)
    # RefCOCO+ has no absolute location words: left/right relations cannot be written, so are not used.
    partners = ([] if style == "refcoco" else
                _partners(scene, index, {"above", "below", "next to"} if style == "refcoco+" else None))
    for _ in range(ATTEMPTS):
        found = _candidate(rng, scene, index, style, unique, partners)
        if found is not None and fits(scene, found[1]) == [index]:
            return found
    return None


def _refs_for(rng: np.random.Generator, images: list[CocoImage], splits: list[str], style: str,
              families: dict[str, str], counters: dict[str, int]) -> list[dict]:
    refs = []
    for img, split in zip(images, splits):
        candidates = [i for i, o in enumerate(img.scene.objects)
                      if split not in families or o.family == families[split]]
        for i in [candidates[int(k)] for k in rng.permutation(len(candidates))[:3]]:
            sentences = []
            for _ in range(int(rng.integers(1, 4))):
                found = expression(rng, img.scene, i, style)
                if found is None:
                    continue
                raw = found[0]
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
