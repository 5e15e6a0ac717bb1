"""The tiny world's files follow the native formats of FORMATS.md."""

import base64
import csv
import glob
import json
import os
import pickle
import re
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from vlfw.world import BENCHMARKS, benchmark_paths, read_manifest
from vlfw.world.detector import CLASSES


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize("subset", ["train2014", "val2014", "test2015"])
def test_vqa_files(world, subset):
    q = load(f"{world}/vqa2/v2_OpenEnded_mscoco_{subset}_questions.json")
    a = load(f"{world}/vqa2/v2_mscoco_{subset}_annotations.json")
    assert {"info", "task_type", "data_type", "data_subtype", "license", "questions"} <= set(q)
    assert {"info", "license", "data_type", "data_subtype", "annotations"} <= set(a)
    assert q["task_type"] == "Open-Ended" and q["data_subtype"] == subset
    assert q["questions"] and len(q["questions"]) == len(a["annotations"])
    by_id = {x["question_id"]: x for x in a["annotations"]}
    for question in q["questions"]:
        assert question["question_id"] // 1000 == question["image_id"]
        assert question["question_id"] % 1000 < 1000
        ann = by_id[question["question_id"]]
        assert ann["answer_type"] in ("yes/no", "number", "other")
        assert sorted(x["answer_id"] for x in ann["answers"]) == list(range(1, 11))
        assert all(x["answer_confidence"] in ("yes", "maybe", "no") for x in ann["answers"])
        texts = [x["answer"] for x in ann["answers"]]
        assert ann["multiple_choice_answer"] == max(set(texts), key=texts.count)
        image = f"{world}/coco/{subset}/COCO_{subset}_{question['image_id']:012d}.jpg"
        assert os.path.isfile(image)
    assert Image.open(image).format == "JPEG"


def test_vqa_answers_disagree_sometimes(world):
    a = load(f"{world}/vqa2/v2_mscoco_train2014_annotations.json")["annotations"]
    assert any(len({x["answer"] for x in ann["answers"]}) > 1 for ann in a)
    assert any(len({x["answer"] for x in ann["answers"]}) == 1 for ann in a)


def test_coco_instances(world):
    inst = load(f"{world}/coco/annotations/instances_train2014.json")
    assert {c["name"] for c in inst["categories"]} == set(CLASSES[1:])
    ids = {img["id"] for img in inst["images"]}
    for ann in inst["annotations"]:
        assert ann["image_id"] in ids
        x, y, w, h = ann["bbox"]
        assert w > 0 and h > 0 and 0 < ann["area"] <= w * h + 1e-6
        assert ann["iscrowd"] == 0 and len(ann["segmentation"][0]) >= 6


@pytest.mark.parametrize("name,splits", [("coco", {"train", "val", "test", "restval"}),
                                         ("flickr30k", {"train", "val", "test"})])
def test_karpathy(world, name, splits):
    data = load(f"{world}/karpathy/dataset_{name}.json")
    assert data["dataset"] == name
    assert {img["split"] for img in data["images"]} == splits
    for k, img in enumerate(data["images"]):
        assert img["imgid"] == k and len(img["sentences"]) == 5
        assert img["sentids"] == [s["sentid"] for s in img["sentences"]]
        for s in img["sentences"]:
            assert s["tokens"] == [t.lower() for t in s["tokens"]] and s["imgid"] == k
        folder = f"{world}/coco/{img['filepath']}" if name == "coco" else f"{world}/flickr30k/flickr30k-images"
        assert os.path.isfile(f"{folder}/{img['filename']}")
        if name == "coco":
            assert img["filepath"] in ("train2014", "val2014") and isinstance(img["cocoid"], int)
    assert any(s["raw"] != s["raw"].strip() for img in data["images"] for s in img["sentences"])


def test_cc3m(world):
    for split, file_name in (("training", "Train_GCC-training.tsv"),
                             ("validation", "Validation_GCC-1.1.0-Validation.tsv")):
        with open(f"{world}/cc3m/{file_name}", encoding="utf-8") as f:
            rows = [line.rstrip("\n").split("\t") for line in f]
        assert rows and all(len(r) == 2 and r[1].startswith("http") for r in rows)
        present = [os.path.isfile(f"{world}/cc3m/{split}/{k:08d}.jpg") for k in range(len(rows))]
        assert 0 < sum(present) < len(rows)  # some dead links on purpose


def test_nlvr2(world):
    fields = {"identifier", "sentence", "label", "left_url", "right_url", "writer", "synset", "query",
              "validation", "extra_validations"}
    for split in ("train", "dev", "test1"):
        rows = jsonl(f"{world}/nlvr2/{split}.json")
        assert rows
        sentences = {}
        for row in rows:
            assert fields <= set(row) and row["label"] in ("True", "False")
            s, setid, pairid, sentid = row["identifier"].split("-")
            assert s == split
            stem = row["identifier"].rsplit("-", 1)[0]
            folder = f"{world}/nlvr2/images/train/{row['directory']}" if split == "train" else f"{world}/nlvr2/{split}"
            for side in ("img0", "img1"):
                assert os.path.isfile(f"{folder}/{stem}-{side}.png")
            sentences.setdefault((setid, sentid), set()).add(pairid)
        assert all(len(p) >= 2 for p in sentences.values())  # consistency is meaningful
    labels = [r["label"] for r in jsonl(f"{world}/nlvr2/train.json")]
    assert "True" in labels and "False" in labels


def test_snli_ve(world):
    keys = set()
    for split in ("train", "dev", "test"):
        rows = jsonl(f"{world}/snli_ve/snli_ve_{split}.jsonl")
        assert rows
        labels = [r["gold_label"] for r in rows]
        assert {labels.count(label) for label in ("entailment", "neutral", "contradiction")} == {len(rows) // 3}
        for r in rows:
            image = r.get("Flickr30K_ID") or r["Flikr30kID"].split(".")[0]
            assert r["pairID"].split(".jpg")[0] == image
            assert os.path.isfile(f"{world}/flickr30k/flickr30k-images/{image}.jpg")
            assert r["gold_label"] in r["annotator_labels"]
            keys |= set(r) & {"Flickr30K_ID", "Flikr30kID"}
    assert keys == {"Flickr30K_ID", "Flikr30kID"}


@pytest.mark.parametrize("dataset,split_bys", [("refcoco", {"unc": {"train", "val", "testA", "testB"},
                                                            "google": {"train", "val", "test"}}),
                                               ("refcoco+", {"unc": {"train", "val", "testA", "testB"}}),
                                               ("refcocog", {"umd": {"train", "val", "test"},
                                                             "google": {"train", "val"}})])
def test_refcoco(world, dataset, split_bys):
    inst = load(f"{world}/refcoco/{dataset}/instances.json")
    anns = {a["id"]: a for a in inst["annotations"]}
    files = {img["id"]: img["file_name"] for img in inst["images"]}
    for split_by, splits in split_bys.items():
        with open(f"{world}/refcoco/{dataset}/refs({split_by}).p", "rb") as f:
            assert f.read(2) == b"\x80\x02"  # protocol 2
            f.seek(0)
            refs = pickle.load(f)
        assert {r["split"] for r in refs} == splits
        for r in refs:
            assert {"ref_id", "ann_id", "image_id", "category_id", "split", "file_name", "sent_ids",
                    "sentences"} <= set(r)
            assert anns[r["ann_id"]]["image_id"] == r["image_id"]
            assert anns[r["ann_id"]]["category_id"] == r["category_id"]
            assert os.path.isfile(f"{world}/coco/train2014/{files[r['image_id']]}")
            assert r["sent_ids"] == [s["sent_id"] for s in r["sentences"]]
            for s in r["sentences"]:
                assert {"tokens", "raw", "sent", "sent_id"} <= set(s)
                if dataset == "refcoco+":
                    assert not set(s["tokens"]) & {"left", "right", "top", "bottom", "leftmost", "rightmost"}
    if dataset == "refcoco":
        # testA refers to round shapes, testB to angular ones.
        names = {c["id"]: c["supercategory"] for c in inst["categories"]}
        with open(f"{world}/refcoco/refcoco/refs(unc).p", "rb") as f:
            refs = pickle.load(f)
        assert {names[r["category_id"]] for r in refs if r["split"] == "testA"} == {"round"}
        assert {names[r["category_id"]] for r in refs if r["split"] == "testB"} == {"angular"}


def test_vcr(world):
    for split in ("train", "val", "test"):
        rows = jsonl(f"{world}/vcr/{split}.jsonl")
        assert rows
        for r in rows:
            assert ("answer_label" in r) == (split != "test")
            assert len(r["answer_choices"]) == 4 and len(r["rationale_choices"]) == 4
            meta = load(f"{world}/vcr/vcr1images/{r['metadata_fn']}")
            assert os.path.isfile(f"{world}/vcr/vcr1images/{r['img_fn']}")
            assert meta["names"] == r["objects"] and len(meta["boxes"]) == len(meta["segms"]) == len(r["objects"])
            assert all(len(b) == 5 for b in meta["boxes"])
            for tokens in [r["question"]] + r["answer_choices"] + r["rationale_choices"]:
                for t in tokens:
                    assert isinstance(t, str) or all(0 <= i < len(r["objects"]) for i in t)
    rows = jsonl(f"{world}/vcr/train.jsonl")
    assert {r["answer_label"] for r in rows} <= {0, 1, 2, 3}


def test_flickr30k_entities(world):
    base = f"{world}/flickr30k_entities"
    ids = [line.strip() for s in ("train", "val", "test") for line in open(f"{base}/{s}.txt")]
    assert ids and all(os.path.isfile(f"{world}/flickr30k/flickr30k-images/{i}.jpg") for i in ids)
    phrase = re.compile(r"\[/EN#(\d+)/(\w+)(?:/\w+)* ([^\]]+)\]")
    notvisual = 0
    for i in ids:
        lines = open(f"{base}/Sentences/{i}.txt", encoding="utf-8").read().splitlines()
        assert len(lines) == 5
        root = ET.parse(f"{base}/Annotations/{i}.xml").getroot()
        width = int(root.find("size/width").text)
        boxed = {n.text for o in root.findall("object") if o.find("bndbox") is not None for n in o.findall("name")}
        scenes = {o.find("name").text for o in root.findall("object") if o.find("scene") is not None}
        for line in lines:
            for chain, kind, _ in phrase.findall(line):
                if chain == "0":
                    notvisual += 1
                    assert kind == "notvisual"
                else:
                    assert chain in (boxed | scenes)
        for box in root.iter("bndbox"):
            assert 1 <= int(box.find("xmin").text) < int(box.find("xmax").text) <= width
    assert notvisual > 0


def _read_tsv(path):
    csv.field_size_limit(sys.maxsize)
    with open(path, newline="") as f:
        return list(csv.reader(f, delimiter="\t"))


@pytest.mark.parametrize("benchmark_name", BENCHMARKS)
def test_benchmark_paths_and_features(world, benchmark_name):
    paths = benchmark_paths(world, benchmark_name)
    assert os.path.isdir(paths["data_dir"]) and os.path.isdir(paths["image_dir"])
    classes = load(paths["classes"])
    assert classes == CLASSES
    tsv = paths["features"]["butd_tsv"]
    assert tsv and all(os.path.isfile(p) for p in tsv)
    rows = _read_tsv(tsv[0])
    assert rows
    row = rows[0]
    image_id, w, h, n = row[0], int(row[1]), int(row[2]), int(row[3])
    boxes = np.frombuffer(base64.b64decode(row[4]), dtype="<f4").reshape(n, 4)
    feats = np.frombuffer(base64.b64decode(row[5]), dtype="<f4").reshape(n, -1)
    assert feats.shape[1] == 256 and 1 <= n <= 10
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
    if benchmark_name in ("vqa2", "flickr30k_entities"):
        assert image_id.isdigit()
    npy_files = sorted(glob.glob(os.path.join(paths["features"]["npy"], "**", "*_info.npy"), recursive=True))
    assert npy_files
    info = np.load(npy_files[0], allow_pickle=True).item()
    assert {"bbox", "num_boxes", "objects", "cls_prob", "image_width", "image_height"} <= set(info)
    assert info["bbox"].shape == (info["num_boxes"], 4)
    assert info["cls_prob"].shape == (info["num_boxes"], len(CLASSES))
    np.testing.assert_allclose(info["cls_prob"].sum(axis=1), 1.0, rtol=1e-5)
    assert np.load(npy_files[0].replace("_info.npy", ".npy")).shape == (info["num_boxes"], 256)


def test_feature_stems_match_image_names(world):
    rows = _read_tsv(f"{world}/features/butd/nlvr2.tsv")
    assert all(re.fullmatch(r"(train|dev|test1)-\d+-\d+-img[01]", r[0]) for r in rows)
    assert os.path.isfile(f"{world}/features/npy/nlvr2/{rows[0][0]}.npy")
    coco_ids = {r[0] for r in _read_tsv(f"{world}/features/butd/coco.tsv")}
    q = load(f"{world}/vqa2/v2_OpenEnded_mscoco_val2014_questions.json")["questions"]
    assert {str(x["image_id"]) for x in q} <= coco_ids


def test_features_follow_pixels(world):
    """The region features of a true object differ from those of a false positive."""
    rows = _read_tsv(f"{world}/features/butd/coco.tsv")
    feats = np.frombuffer(base64.b64decode(rows[0][5]), dtype="<f4").reshape(int(rows[0][3]), -1)
    assert np.isfinite(feats).all() and feats.std() > 0
    assert not np.allclose(feats[0], feats[-1])


def test_manifest(world):
    m = read_manifest(world)
    assert m["size"] == "tiny" and m["seed"] == 0 and m["generator_version"]
    assert "total" in m["timings"] and m["files"]["annotation_sha256"]
    assert "vqa2/v2_mscoco_val2014_annotations.json" in m["files"]["annotation_sha256"]
