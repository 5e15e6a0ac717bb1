"""Linear probes of what the world's region features carry (colour and shape of true objects).

For each true object of the COCO train images (instances_train2014.json) the detection with the
highest IoU (>= 0.5) is looked up in the npy + _info.npy features, and a softmax regression is
trained on 80% of the objects (split by image) and scored on the other 20%. Real
bottom-up-attention features make both attributes linearly readable; a world whose features do
not cannot teach a model the questions that name shapes. CLI: tools/bench/region_probe.py.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch
from torchvision.ops import box_iou

from vlfw.restricted_pickle import load_npy_object


def collect(root: str, images: int) -> tuple[np.ndarray, ...]:
    """(features, colour index, shape index, image index, detected shape index, size index) of the
    matched true objects; the detected shape is the argmax of the detection's class probabilities
    minus 1 (-1 for `__background__`); size 0 is small, 1 large."""
    with open(os.path.join(root, "coco", "annotations", "instances_train2014.json"), encoding="utf-8") as f:
        inst = json.load(f)
    by_image: dict[int, list[dict]] = {}
    for ann in inst["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    colours = sorted({a["attributes"]["color"] for a in inst["annotations"]})
    feats, colour, shape, image, detected, size = [], [], [], [], [], []
    for k, entry in enumerate(inst["images"][:images]):
        stem = os.path.join(root, "features", "npy", "coco", os.path.splitext(entry["file_name"])[0])
        x = np.load(stem + ".npy", allow_pickle=False)
        with open(stem + "_info.npy", "rb") as f:
            info = load_npy_object(f.read(), stem + "_info.npy").item()  # a pickle: never np.load(allow_pickle=True)
        anns = by_image.get(entry["id"], [])
        truth = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                              for a in anns], dtype=torch.float32)
        iou = box_iou(truth, torch.as_tensor(info["bbox"], dtype=torch.float32))
        best, index = iou.max(dim=1)
        for a, b, i in zip(anns, best.tolist(), index.tolist()):
            if b >= 0.5:
                feats.append(x[i])
                colour.append(colours.index(a["attributes"]["color"]))
                shape.append(a["category_id"] - 1)
                image.append(k)
                detected.append(int(np.argmax(info["cls_prob"][i])) - 1)
                size.append(int(a["attributes"]["size"] == "large"))
    return (np.stack(feats), np.array(colour), np.array(shape), np.array(image), np.array(detected),
            np.array(size))


def probe(x: np.ndarray, y: np.ndarray, train: np.ndarray, steps: int = 300,
          weight_decay: float = 1e-2) -> tuple[float, float]:
    """(held-out accuracy, majority rate) of a softmax regression on standardised features."""
    xt = torch.from_numpy(x).float()
    mean, std = xt[train].mean(0), xt[train].std(0) + 1e-6
    xt = (xt - mean) / std
    yt = torch.from_numpy(y).long()
    layer = torch.nn.Linear(x.shape[1], int(y.max()) + 1)
    opt = torch.optim.LBFGS(layer.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(layer(xt[train]), yt[train]) + weight_decay * layer.weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        accuracy = (layer(xt[~train]).argmax(1) == yt[~train]).float().mean().item()
    majority = float(np.bincount(y[~train]).max() / int((~train).sum()))
    return 100 * accuracy, 100 * majority


def probe_world(root: str, images: int = 1500, seed: int = 0) -> dict[str, object]:
    """Held-out colour, shape and size accuracy (and majority rates, in %) of linear probes on `root`, and
    `class_right`: the share (%) of matched true objects whose detection's most probable class is right."""
    x, colour, shape, image, detected, size = collect(root, images)
    count = int(image.max()) + 1
    train = np.random.default_rng(seed).permutation(count)[image] < 0.8 * count
    torch.manual_seed(seed)
    result: dict[str, object] = {"objects": len(x), "images": count, "feature_dim": int(x.shape[1]),
                                 "train": int(train.sum()), "held_out": int((~train).sum()),
                                 "class_right": 100.0 * float((detected == shape).mean())}
    for name, y in (("colour", colour), ("shape", shape), ("size", size)):
        result[name], result[f"{name}_majority"] = probe(x, y, train)
    return result
