"""The COCO-like pool: images, COCO instances, VQA v2 and the Karpathy COCO captions."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from vlfw.world.language import caption, tokenize
from vlfw.world.pools import ImagePool, split_by_fraction, unique_ids, write_json
from vlfw.world.scene import SHAPE_FAMILY, SHAPES, Scene, make_rng, polygon_area, polygon_points
from vlfw.world.vqa import human_answers, image_templates, plan_image

SUBSETS = ["train2014", "val2014", "test2015"]
CATEGORIES = [{"id": k + 1, "name": s, "supercategory": SHAPE_FAMILY[s]} for k, s in enumerate(SHAPES)]
INFO = {"description": "vlfw Shapes world", "version": "1.0", "year": 2024,
        "contributor": "vlfw", "url": "https://shapes.invalid"}
LICENSE = {"url": "https://shapes.invalid/license", "name": "synthetic, no restrictions"}


@dataclass
class CocoImage:
    image_id: int
    subset: str
    scene: Scene
    questions: list[dict]
    annotation_ids: list[int] = field(default_factory=list)

    @property
    def file_name(self) -> str:
        return f"COCO_{self.subset}_{self.image_id:012d}.jpg"


def plan_vqa_images(seed: int, counts: dict[str, int], questions_per_image: int = 4,
                    width: int = 128, height: int = 128) -> list[CocoImage]:
    """Scenes and questions of the pool (no rendering): usable alone to study answer balance."""
    rng = make_rng(seed, "coco")
    ids = [int(v) for v in rng.permutation(unique_ids(rng, sum(counts.values()), 9, 600000))]
    images, k = [], 0
    for subset in SUBSETS:
        for _ in range(counts.get(subset, 0)):
            scene, questions = plan_image(rng, image_templates(rng, questions_per_image), width, height)
            images.append(CocoImage(ids[k], subset, scene, questions))
            k += 1
    ann_id = 100000
    for img in images:
        for _ in img.scene.objects:
            ann_id += int(rng.integers(1, 40))
            img.annotation_ids.append(ann_id)
    return images


def render_pool(root: str, images: list[CocoImage], pool: ImagePool) -> None:
    for img in images:
        pool.add(os.path.join(root, "coco", img.subset, img.file_name), img.scene, img.image_id)


def coco_annotation(img: CocoImage, index: int) -> dict:
    obj = img.scene.objects[index]
    poly = polygon_points(obj)
    x1, y1, x2, y2 = obj.box
    return {"id": img.annotation_ids[index], "image_id": img.image_id, "category_id": SHAPES.index(obj.shape) + 1,
            "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
            "area": round(polygon_area(poly), 2), "iscrowd": 0,
            "segmentation": [[round(v, 2) for p in poly for v in p]],
            "attributes": {"color": obj.color, "size": obj.size}}


def image_entry(img: CocoImage) -> dict:
    return {"id": img.image_id, "file_name": img.file_name, "width": img.scene.width,
            "height": img.scene.height, "license": 1, "coco_url": f"https://shapes.invalid/{img.file_name}"}


def write_instances(root: str, images: list[CocoImage]) -> None:
    for subset in ("train2014", "val2014"):
        chosen = [img for img in images if img.subset == subset]
        write_json(os.path.join(root, "coco", "annotations", f"instances_{subset}.json"), {
            "info": INFO, "licenses": [dict(LICENSE, id=1)],
            "images": [image_entry(img) for img in chosen],
            "annotations": [coco_annotation(img, i) for img in chosen for i in range(len(img.scene.objects))],
            "categories": CATEGORIES,
        })


def write_vqa(root: str, images: list[CocoImage], seed: int) -> int:
    rng = make_rng(seed, "vqa-answers")
    total = 0
    for subset in SUBSETS:
        questions, annotations = [], []
        for img in images:
            if img.subset != subset:
                continue
            for k, q in enumerate(img.questions):
                qid = img.image_id * 1000 + k
                questions.append({"image_id": img.image_id, "question": q["question"], "question_id": qid})
                answers, most_common = human_answers(rng, q["answer"], q["answer_type"])
                annotations.append({"question_type": q["question_type"], "multiple_choice_answer": most_common,
                                    "answers": answers, "image_id": img.image_id, "answer_type": q["answer_type"],
                                    "question_id": qid})
        total += len(questions)
        write_json(os.path.join(root, "vqa2", f"v2_OpenEnded_mscoco_{subset}_questions.json"), {
            "info": INFO, "task_type": "Open-Ended", "data_type": "mscoco", "data_subtype": subset,
            "license": LICENSE, "questions": questions})
        write_json(os.path.join(root, "vqa2", f"v2_mscoco_{subset}_annotations.json"), {
            "info": INFO, "license": LICENSE, "data_type": "mscoco", "data_subtype": subset,
            "annotations": annotations})
    return total


def karpathy_entries(rng: np.random.Generator, scenes: list[Scene], splits: list[str],
                     names: list[str], captions_per_image: int = 5) -> list[dict]:
    """Karpathy-style image entries (without the dataset-specific keys)."""
    entries, sentid = [], 0
    for imgid, (scene, split, name) in enumerate(zip(scenes, splits, names)):
        sentences = []
        for _ in range(captions_per_image):
            raw = caption(rng, scene)
            sentences.append({"tokens": tokenize(raw), "raw": raw, "imgid": imgid, "sentid": sentid})
            sentid += 1
        entries.append({"filename": name, "imgid": imgid, "split": split,
                        "sentids": [s["sentid"] for s in sentences], "sentences": sentences})
    return entries


def write_karpathy_coco(root: str, images: list[CocoImage], seed: int) -> int:
    rng = make_rng(seed, "karpathy-coco")
    chosen = [img for img in images if img.subset in ("train2014", "val2014")]
    val_images = [img for img in chosen if img.subset == "val2014"]
    val_splits = split_by_fraction(len(val_images), rng, {"restval": 0.4, "val": 0.3, "test": 0.3})
    split_of = {img.image_id: s for img, s in zip(val_images, val_splits)}
    splits = [split_of.get(img.image_id, "train") for img in chosen]
    entries = karpathy_entries(rng, [img.scene for img in chosen], splits, [img.file_name for img in chosen])
    for entry, img in zip(entries, chosen):
        entry["filepath"] = img.subset
        entry["cocoid"] = img.image_id
    write_json(os.path.join(root, "karpathy", "dataset_coco.json"), {"images": entries, "dataset": "coco"})
    return len(entries)
