"""Generating a whole Shapes world into a directory."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from concurrent.futures import Executor, ProcessPoolExecutor

from vlfw.errors import DataError, did_you_mean
from vlfw.world import cc3m, coco, flickr, nlvr2, refcoco, vcr
from vlfw.world.detector import CLASSES, FeatureWriter, FrozenBackbone
from vlfw.world.pools import ImagePool, render_workers

SIZES = {
    "tiny": {"coco": {"train2014": 40, "val2014": 20, "test2015": 8}, "flickr30k": 30,
             "nlvr2_sets": {"train": 4, "dev": 2, "test1": 2}, "nlvr2_pairs": 2,
             "vcr": {"train": 8, "val": 4, "test": 4}, "cc3m": {"training": 16, "validation": 6}},
    "default": {"coco": {"train2014": 5000, "val2014": 1000, "test2015": 500}, "flickr30k": 2000,
                "nlvr2_sets": {"train": 1600, "dev": 220, "test1": 220}, "nlvr2_pairs": 2,
                "vcr": {"train": 400, "val": 100, "test": 100}, "cc3m": {"training": 900, "validation": 100}},
}
OPTIONS = {"feature_dim": 256, "max_boxes": 10, "image_size": 128, "questions_per_image": 4, "features": True}


def resolve_size(size: str) -> dict:
    if size not in SIZES:
        raise DataError(f"unknown Shapes world size {size!r}.{did_you_mean(size, SIZES)} Known: {', '.join(SIZES)}")
    return SIZES[size]


def check_options(options: dict) -> None:
    """Known option names; sizes and counts are positive integers, `features` a boolean."""
    unknown = set(options) - set(OPTIONS)
    if unknown:
        raise DataError(f"unknown Shapes world option(s) {sorted(unknown)}; known: {sorted(OPTIONS)}")
    for name, value in options.items():
        if name == "features":
            if not isinstance(value, bool):
                raise DataError(f"Shapes world option features must be true or false, got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise DataError(f"Shapes world option {name} must be a positive integer, got {value!r}")


def generate_world(root: str, size: str = "tiny", seed: int = 0, workers: int | None = None, **options) -> dict:
    """Writes every benchmark of the world under `root` (created); returns counts and timings.
    `workers`: processes that render and encode images (`pools.render_workers`); the files are
    the same for any number."""
    check_options(options)
    spec = resolve_size(size)
    workers = render_workers(workers)
    if workers == 0:
        return _generate(root, spec, seed, None, options)
    # fork: the workers need only the scenes (no torch), and start in milliseconds
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
    with ProcessPoolExecutor(workers, mp_context=context) as executor:
        return _generate(root, spec, seed, executor, options)


def _generate(root: str, spec: dict, seed: int, executor: Executor | None, options: dict) -> dict:
    opts = {**OPTIONS, **options}
    wh = {"width": opts["image_size"], "height": opts["image_size"]}
    os.makedirs(root, exist_ok=True)
    timings: dict[str, float] = {}
    counts: dict[str, object] = {}
    backbone = FrozenBackbone(opts["feature_dim"]) if opts["features"] else None

    def new_pool(name: str, npy_dir: str | None = None) -> ImagePool:
        if backbone is None:
            return ImagePool(None, executor)
        return ImagePool(FeatureWriter(root, name, opts["feature_dim"], opts["max_boxes"], seed, backbone,
                                       npy_dir=npy_dir), executor)

    def step(name: str, fn, *args):
        start = time.perf_counter()
        result = fn(*args)
        timings[name] = round(time.perf_counter() - start, 3)
        if isinstance(result, (int, dict)):
            counts[name] = result
        return result

    images = step("plan_coco", coco.plan_vqa_images, seed, spec["coco"], opts["questions_per_image"],
                  wh["width"], wh["height"])
    pool = new_pool("coco")
    step("coco_images", coco.render_pool, root, images, pool)
    pool.close()
    counts["coco_images"] = pool.num_images
    step("coco_instances", coco.write_instances, root, images)
    step("vqa2", coco.write_vqa, root, images, seed)
    step("karpathy_coco", coco.write_karpathy_coco, root, images, seed)
    step("refcoco", refcoco.write_refcoco, root, images, seed)

    fimages = step("plan_flickr30k", flickr.plan_flickr, seed, spec["flickr30k"], wh["width"], wh["height"])
    pool = new_pool("flickr30k")
    step("flickr30k_images", flickr.render_pool, root, fimages, pool)
    pool.close()
    counts["flickr30k_images"] = pool.num_images
    step("karpathy_flickr30k", flickr.write_karpathy_flickr, root, fimages, seed)
    step("snli_ve", flickr.write_snli_ve, root, fimages, seed)
    step("flickr30k_entities", flickr.write_entities, root, fimages, seed)

    pool = new_pool("nlvr2")
    step("nlvr2", nlvr2.write_nlvr2, root, seed, spec["nlvr2_sets"], spec["nlvr2_pairs"], pool,
         wh["width"], wh["height"])
    pool.close()
    pool = new_pool("vcr")
    step("vcr", vcr.write_vcr, root, seed, spec["vcr"], pool, wh["width"], wh["height"])
    pool.close()
    pools = {"training": new_pool("cc3m_training", "cc3m/training"),
             "validation": new_pool("cc3m_validation", "cc3m/validation")}
    step("cc3m", cc3m.write_cc3m, root, seed, spec["cc3m"], pools, 0.05, wh["width"], wh["height"])
    for p in pools.values():
        p.close()
    if backbone is not None:
        os.makedirs(os.path.join(root, "features"), exist_ok=True)
        with open(os.path.join(root, "features", "classes.json"), "w", encoding="utf-8") as f:
            json.dump(CLASSES, f)
    return {"counts": counts, "timings": timings, "options": opts}

