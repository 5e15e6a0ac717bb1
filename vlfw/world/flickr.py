"""The Flickr30k-like pool: images, Karpathy captions, SNLI-VE and Flickr30k Entities."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from vlfw.world.coco import karpathy_entries
from vlfw.world.language import (
    BACKGROUND_WORDS,
    RELATION_WORDS,
    SIZE_WORDS,
    article,
    caption,
    color_word,
    count_phrase,
    object_phrase,
    pick,
    shape_word,
    vary_case,
)
from vlfw.world.pools import ImagePool, split_by_fraction, unique_ids, write_json, write_jsonl
from vlfw.world.scene import COLOR_NAMES, SHAPES, Scene, WorldObject, make_rng, relation, sample_scene

# SNLI-VE hypotheses: one template set for all three labels. A template is drawn with its word
# slot first; then its two object slots are filled so that the statement is true of the image
# (entailment), its opposite is true (contradiction), or one of the two objects is not in the
# picture, so the image cannot tell where or how big it is (neutral: it may lie outside the frame).
HYPOTHESIS_TEMPLATES = {
    "position": ["the {a} is {word} the {b}", "the {a} can be seen {word} the {b}"],
    "size": ["the {a} is {word} than the {b}"],
    "same_size": ["the {a} and the {b} are {word}", "the {a} is {word} as the {b}"],
    "nearness": ["the {a} is {word} the {b}"],
}
POSITION_OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
SIZE_WORDS_CMP = {"bigger": "large", "larger": "large", "smaller": "small"}
SAME_SIZE_WORDS = {"the same size": "same", "of different sizes": "different", "as big": "same"}
NEAR_WORDS = RELATION_WORDS["next to"]
SNLI_LABELS = ["entailment", "neutral", "contradiction"]


@dataclass
class FlickrImage:
    image_id: int
    split: str
    scene: Scene

    @property
    def file_name(self) -> str:
        return f"{self.image_id}.jpg"


def plan_flickr(seed: int, count: int, width: int = 128, height: int = 128) -> list[FlickrImage]:
    rng = make_rng(seed, "flickr30k")
    ids = [int(v) for v in rng.permutation(unique_ids(rng, count, 10**8, 10**10))]
    splits = split_by_fraction(count, rng, {"train": 0.8, "val": 0.1, "test": 0.1})
    return [FlickrImage(i, s, sample_scene(rng, width, height)) for i, s in zip(ids, splits)]


def render_pool(root: str, images: list[FlickrImage], pool: ImagePool) -> None:
    for img in images:
        pool.add(os.path.join(root, "flickr30k", "flickr30k-images", img.file_name), img.scene, img.image_id)


def write_karpathy_flickr(root: str, images: list[FlickrImage], seed: int) -> int:
    rng = make_rng(seed, "karpathy-flickr")
    entries = karpathy_entries(rng, [i.scene for i in images], [i.split for i in images],
                               [i.file_name for i in images])
    write_json(os.path.join(root, "karpathy", "dataset_flickr30k.json"), {"images": entries, "dataset": "flickr30k"})
    return len(entries)


def _slot_word(rng: np.random.Generator, kind: str, template: str) -> tuple[str, str]:
    """(word written, what it means) for the word slot of a template of `kind`."""
    if kind == "position":
        rel = pick(rng, list(POSITION_OPPOSITE))
        return pick(rng, RELATION_WORDS[rel]), rel
    if kind == "size":
        word = pick(rng, list(SIZE_WORDS_CMP))
        return word, SIZE_WORDS_CMP[word]
    if kind == "same_size":
        words = ["as big"] if "as the" in template else ["the same size", "of different sizes"]
        word = pick(rng, words)
        return word, SAME_SIZE_WORDS[word]
    return pick(rng, NEAR_WORDS), "next to"


def _holds(kind: str, sense: str, a: WorldObject, b: WorldObject) -> bool | None:
    """True / False when the image decides the statement about present objects a and b clearly, else None."""
    if kind == "position":
        rels = relation(a, b)
        if sense in rels:
            return True
        return False if POSITION_OPPOSITE[sense] in rels else None
    if kind == "size":
        if a.size == b.size:
            return None
        return a.size == sense
    if kind == "same_size":
        return (a.size == b.size) == (sense == "same")
    distance = math.hypot(a.cx - b.cx, a.cy - b.cy)
    if "next to" in relation(a, b):
        return True
    return False if distance > a.radius + b.radius + 34 else None


def _phrase(rng: np.random.Generator, shape: str, color: str, size: str, with_size: bool) -> str:
    words = ([pick(rng, SIZE_WORDS[size])] if with_size else []) + [color_word(rng, color), shape_word(rng, shape)]
    return " ".join(words)


def hypotheses(rng: np.random.Generator, scene: Scene, tries: int = 30) -> dict[str, str] | None:
    """One hypothesis per label from the same drawn template and slot word, or None when the scene
    cannot support all three (no two objects told apart by colour and shape, say)."""
    unique = [i for i, o in enumerate(scene.objects) if scene.matching(shape=o.shape, color=o.color) == [i]]
    present = {(o.shape, o.color) for o in scene.objects}
    absent = [(s, c) for s in SHAPES for c in COLOR_NAMES if (s, c) not in present]
    pairs = [(i, j) for i in unique for j in unique if i != j]
    if not pairs:
        return None
    for _ in range(tries):
        kind = pick(rng, list(HYPOTHESIS_TEMPLATES))
        template = pick(rng, HYPOTHESIS_TEMPLATES[kind])
        word, sense = _slot_word(rng, kind, template)
        decided = {True: [], False: []}
        for i, j in pairs:
            value = _holds(kind, sense, scene.objects[i], scene.objects[j])
            if value is not None:
                decided[value].append((i, j))
        if not decided[True] or not decided[False]:
            continue
        with_size = kind in ("position", "nearness") and rng.random() < 0.3
        out = {}
        for label in SNLI_LABELS:
            if label == "neutral":
                shown = scene.objects[unique[int(rng.integers(len(unique)))]]
                s, c = absent[int(rng.integers(len(absent)))]
                objs = [(shown.shape, shown.color, shown.size),
                        (s, c, "small" if rng.random() < 0.5 else "large")]
                if rng.random() < 0.5:
                    objs.reverse()
            else:
                options = decided[label == "entailment"]
                i, j = options[int(rng.integers(len(options)))]
                objs = [(o.shape, o.color, o.size) for o in (scene.objects[i], scene.objects[j])]
            a, b = (_phrase(rng, *o, with_size=with_size) for o in objs)
            out[label] = vary_case(rng, template.format(a=a, b=b, word=word)) + "."
        return out
    return None


def write_snli_ve(root: str, images: list[FlickrImage], seed: int) -> dict:
    rng = make_rng(seed, "snli_ve")
    labels = SNLI_LABELS
    counts = {}
    for split, native in (("train", "train"), ("val", "dev"), ("test", "test")):
        rows = []
        for img in (i for i in images if i.split == split):
            for k in range(2):
                premise = caption(rng, img.scene).strip()
                triple = hypotheses(rng, img.scene)
                if triple is None:  # every image's pairs stay balanced over the three labels
                    continue
                for label in labels:
                    h = triple[label]
                    n_annot = 5 if rng.random() < 0.3 else 1
                    annot = [label] * n_annot
                    if n_annot == 5:
                        annot[int(rng.integers(1, 5))] = pick(rng, [other for other in labels if other != label])
                    row = {"annotator_labels": annot, "captionID": f"{img.file_name}#{k}",
                           "gold_label": label, "pairID": f"{img.file_name}#{k}r1{label[0]}",
                           "sentence1": premise, "sentence1_binary_parse": "", "sentence1_parse": "",
                           "sentence2": h, "sentence2_binary_parse": "", "sentence2_parse": ""}
                    # Older releases name the image "Flikr30kID" with the extension; newer "Flickr30K_ID".
                    if native == "test":
                        row["Flikr30kID"] = img.file_name
                    else:
                        row["Flickr30K_ID"] = str(img.image_id)
                    rows.append(row)
        order = rng.permutation(len(rows))
        rows = [rows[int(i)] for i in order]
        write_jsonl(os.path.join(root, "snli_ve", f"snli_ve_{native}.jsonl"), rows)
        counts[native] = len(rows)
    return counts


def entities_sentence(rng: np.random.Generator, scene: Scene, chains: dict[int, int]) -> str:
    """One annotated sentence; `chains` maps object index -> chain id."""
    objs = scene.objects
    i = int(rng.integers(len(objs)))
    o = objs[i]
    same = scene.matching(shape=o.shape)
    parts = []
    many = len(same) > 1 and rng.random() < 0.5
    if many:
        key = tuple(same)
        chain = chains.setdefault(key, len(chains) + 1)
        phrase = count_phrase(rng, len(same), shape_word(rng, o.shape))
        parts.append(f"[/EN#{chain}/other {phrase}]")
    else:
        chain = chains.setdefault((i,), len(chains) + 1)
        parts.append(f"[/EN#{chain}/other {article(object_phrase(rng, o))}]")
    verb = pick(rng, ["lie on", "sit on", "are drawn on"] if many else ["lies on", "sits on", "is drawn on"])
    scene_chain = chains.setdefault(("scene",), len(chains) + 1)
    bg = pick(rng, BACKGROUND_WORDS)
    text = f"{parts[0]} {verb} [/EN#{scene_chain}/scene {bg}]"
    if len(objs) > 1 and rng.random() < 0.6:
        j = int(rng.integers(len(objs)))
        if j != i:
            cj = chains.setdefault((j,), len(chains) + 1)
            text += f" near [/EN#{cj}/other {article(object_phrase(rng, objs[j], with_size=False))}]"
    if rng.random() < 0.3:
        text += f" and [/EN#0/notvisual {pick(rng, ['nobody', 'it', 'something'])}] seems calm"
    # Capitalise the first word inside the first phrase; the bracket markup itself stays as is.
    head, _, rest = text.partition(" ")
    return f"{head} {rest[:1].upper()}{rest[1:]} ."


def entities_xml(img: FlickrImage, chains: dict) -> str:
    scene = img.scene
    lines = ["<annotation>", f"  <filename>{img.file_name}</filename>", "  <size>",
             f"    <width>{scene.width}</width>", f"    <height>{scene.height}</height>", "    <depth>3</depth>",
             "  </size>", "  <segmented>0</segmented>"]
    boxes_of: dict[int, list[int]] = {}
    for key, chain in chains.items():
        if key == ("scene",):
            continue
        for i in key:
            boxes_of.setdefault(i, []).append(chain)
    for i, obj in enumerate(scene.objects):
        if i not in boxes_of:
            continue
        x1, y1, x2, y2 = obj.box
        names = "".join(f"<name>{c}</name>" for c in sorted(boxes_of[i]))
        corners = [int(np.floor(x1)) + 1, int(np.floor(y1)) + 1, int(np.ceil(x2)) + 1, int(np.ceil(y2)) + 1]
        lines.append(f"  <object>{names}<bndbox><xmin>{corners[0]}</xmin><ymin>{corners[1]}</ymin>"
                     f"<xmax>{min(corners[2], scene.width)}</xmax><ymax>{min(corners[3], scene.height)}</ymax>"
                     f"</bndbox></object>")
    if ("scene",) in chains:
        lines.append(f"  <object><name>{chains[('scene',)]}</name><nobndbox>1</nobndbox><scene>1</scene></object>")
    lines.append("</annotation>")
    return "\n".join(lines) + "\n"


def write_entities(root: str, images: list[FlickrImage], seed: int) -> int:
    rng = make_rng(seed, "flickr30k_entities")
    base = os.path.join(root, "flickr30k_entities")
    os.makedirs(os.path.join(base, "Sentences"), exist_ok=True)
    os.makedirs(os.path.join(base, "Annotations"), exist_ok=True)
    for img in images:
        chains: dict = {}
        sentences = [entities_sentence(rng, img.scene, chains) for _ in range(5)]
        with open(os.path.join(base, "Sentences", f"{img.image_id}.txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(sentences) + "\n")
        with open(os.path.join(base, "Annotations", f"{img.image_id}.xml"), "w", encoding="utf-8") as f:
            f.write(entities_xml(img, chains))
    for split in ("train", "val", "test"):
        with open(os.path.join(base, f"{split}.txt"), "w", encoding="utf-8") as f:
            f.write("".join(f"{i.image_id}\n" for i in images if i.split == split))
    return len(images)
