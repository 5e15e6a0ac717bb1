"""Where each benchmark's files lie inside a Shapes world root."""

from __future__ import annotations

import os

from vlfw.errors import DataError, did_you_mean

# benchmark -> (data dir, image dir, feature pools), relative to the root.
_LAYOUT = {
    "vqa2": ("vqa2", "coco", ["coco"]),
    "coco_retrieval": ("karpathy", "coco", ["coco"]),
    "coco_captioning": ("karpathy", "coco", ["coco"]),
    "refcoco": ("refcoco", "coco", ["coco"]),
    "refcoco_plus": ("refcoco", "coco", ["coco"]),
    "refcocog": ("refcoco", "coco", ["coco"]),
    "flickr30k_retrieval": ("karpathy", "flickr30k", ["flickr30k"]),
    "flickr30k_captioning": ("karpathy", "flickr30k", ["flickr30k"]),
    "snli_ve": ("snli_ve", "flickr30k", ["flickr30k"]),
    "flickr30k_entities": ("flickr30k_entities", "flickr30k", ["flickr30k"]),
    "nlvr2": ("nlvr2", "nlvr2", ["nlvr2"]),
    "vcr": ("vcr", "vcr", ["vcr"]),
    "cc3m": ("cc3m", "cc3m", ["cc3m_training", "cc3m_validation"]),
}
BENCHMARKS = list(_LAYOUT)
# Feature pool of each npy directory; CC3M keeps one sub-directory per split (training/, validation/).
_NPY_DIR = {"cc3m": "cc3m"}


def benchmark_paths(root: str, benchmark: str) -> dict:
    """{"data_dir", "image_dir", "features": {"butd_tsv": [...], "npy": dir}, "classes"} for `benchmark`."""
    if benchmark not in _LAYOUT:
        raise DataError(f"no Shapes-world layout for benchmark {benchmark!r}.{did_you_mean(benchmark, _LAYOUT)}"
                        f" Known: {', '.join(BENCHMARKS)}")
    data, images, pools = _LAYOUT[benchmark]
    features = os.path.join(root, "features")
    npy = _NPY_DIR.get(benchmark, pools[0])
    return {
        "data_dir": os.path.join(root, data),
        "image_dir": os.path.join(root, images),
        "features": {"butd_tsv": [os.path.join(features, "butd", f"{p}.tsv") for p in pools],
                     "npy": os.path.join(features, "npy", npy)},
        "classes": os.path.join(features, "classes.json"),
    }
