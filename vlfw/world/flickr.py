"""The Flickr30k-like pool: images, Karpathy captions, SNLI-VE and Flickr30k Entities."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from vlfw.world.coco import karpathy_entries
from vlfw.world.language import (
    BACKGROUND_WORDS,
    article,
    caption,
    color_word,
    count_phrase,
    object_phrase,
    pick,
    plural,
    shape_word,
    vary_case,
)
from vlfw.world.pools import ImagePool, split_by_fraction, unique_ids, write_json, write_jsonl
from vlfw.world.scene import COLOR_NAMES, SHAPES, Scene, make_rng, sample_scene

NEUTRAL_TEMPLATES = [
    "the {thing} is made of wood", "the {thing} is made of plastic", "someone painted the {thing} by hand",
    "the {thing} is about to move", "the {thing} was drawn first", "the {thing} is heavy",
    "the {thing} belongs to a child", "the picture was taken in the morning", "the {thing} is warm",
]


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


def hypothesis(rng: np.random.Generator, scene: Scene, label: str) -> str:
    """A statement about the image that is entailed, contradicted, or not decidable from it."""
    o = scene.objects[int(rng.integers(len(scene.objects)))]
    if label == "neutral":
        thing = object_phrase(rng, o, with_size=False)
        return vary_case(rng, pick(rng, NEUTRAL_TEMPLATES).format(thing=thing)) + "."
    form = int(rng.integers(3))
    if form == 0:  # existence
        if label == "entailment":
            text = f"there is {article(object_phrase(rng, o, with_size=False))} in the image"
        else:
            present = {(p.shape, p.color) for p in scene.objects}
            absent = [(s, c) for s in SHAPES for c in COLOR_NAMES if (s, c) not in present]
            s, c = absent[int(rng.integers(len(absent)))]
            text = f"there is {article(color_word(rng, c) + ' ' + shape_word(rng, s))} in the image"
    elif form == 1:  # count
        n = scene.count(shape=o.shape)
        if label == "contradiction":
            n = n + 1 if rng.random() < 0.5 or n == 1 else n - 1
        text = f"the picture shows exactly {count_phrase(rng, n, shape_word(rng, o.shape))}"
    else:  # colour of a shape kind
        color = o.color
        if label == "contradiction":
            others = [c for c in COLOR_NAMES if scene.count(shape=o.shape, color=c) == 0]
            color = others[int(rng.integers(len(others)))]
            text = f"all the {plural(shape_word(rng, o.shape))} are {color_word(rng, color)}"
        else:
            text = f"at least one {shape_word(rng, o.shape)} is {color_word(rng, color)}"
    return vary_case(rng, text) + "."


def write_snli_ve(root: str, images: list[FlickrImage], seed: int) -> dict:
    rng = make_rng(seed, "snli_ve")
    labels = ["entailment", "neutral", "contradiction"]
    counts = {}
    for split, native in (("train", "train"), ("val", "dev"), ("test", "test")):
        rows = []
        for img in (i for i in images if i.split == split):
            for k in range(2):
                premise = caption(rng, img.scene).strip()
                for label in labels:
                    h = hypothesis(rng, img.scene, label)
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
