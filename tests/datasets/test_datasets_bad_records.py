"""Bad inputs, each both ways: an error naming the file and record, or a counted skip."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from dataset_helpers import make_builder, native

from vlfw.errors import DataError


def snli(tmp_path, skip, **config):
    facts = native.write_snli_ve(str(tmp_path))
    return facts, make_builder("snli_ve", str(tmp_path), skip_bad_records=skip, **config)


@pytest.mark.parametrize("how", ["corrupt", "missing"])
def test_bad_image(tmp_path, how):
    path = tmp_path / "flickr30k_images" / "101.jpg"
    facts, strict = snli(tmp_path, False)
    if how == "corrupt":
        path.write_bytes(b"\xff\xd8\xff garbage, not a jpeg")
    else:
        path.unlink()
    with pytest.raises(DataError, match=r"101\.jpg.*pairID 101\.jpg#0r1n"):
        strict.build("train")[1]
    lenient = make_builder("snli_ve", str(tmp_path), skip_bad_records=True)
    dataset = lenient.build("train")
    sample = dataset[1]  # replaced by the next good record, which keeps its own index
    assert sample.index == 2 and sample.image_id == "102"
    assert dataset.bad_record_report()["load"] == {"image": 1}
    dataset.set_epoch(0)
    assert dataset.end_epoch()["load"] == {"image": 1}
    assert dataset.bad_record_report()["load"] == {}
    assert facts


def test_truncated_json_lines_record(tmp_path):
    native.write_snli_ve(str(tmp_path))
    path = tmp_path / "snli_ve_train.jsonl"
    lines = path.read_text().splitlines()
    lines[1] = lines[1][: len(lines[1]) // 2]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"snli_ve_train\.jsonl.*line 2.*not valid JSON"):
        make_builder("snli_ve", str(tmp_path)).build("train")
    dataset = make_builder("snli_ve", str(tmp_path), skip_bad_records=True).build("train")
    assert len(dataset) == 2
    assert sum(dataset.bad_record_report()["build"].values()) == 1


def test_truncated_json_document_is_an_error_either_way(tmp_path):
    native.write_vqa2(str(tmp_path))
    path = tmp_path / "v2_OpenEnded_mscoco_train2014_questions.json"
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    for skip in (False, True):
        # a document that does not parse holds no record that could be skipped
        builder = make_builder("vqa2", str(tmp_path), skip_bad_records=skip, processors={"answer": {"params": {"min_count": 1}}})
        with pytest.raises(DataError, match=r"train2014_questions\.json: not valid JSON at line 1"):
            builder.build("train")


def test_empty_question(tmp_path):
    native.write_vqa2(str(tmp_path))
    path = tmp_path / "v2_OpenEnded_mscoco_train2014_questions.json"
    data = json.loads(path.read_text())
    data["questions"][2]["question"] = "   "
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"train2014_questions\.json: bad record at question_id 2000: empty question"):
        make_builder("vqa2", str(tmp_path), processors={"answer": {"params": {"min_count": 1}}}).build("train")
    dataset = make_builder("vqa2", str(tmp_path), skip_bad_records=True,
                           processors={"answer": {"params": {"min_count": 1}}}).build("train")
    assert len(dataset) == 2 and dataset.bad_record_report()["build"] == {"record: empty question": 1}


def test_answer_outside_vocabulary(tmp_path):
    """Training questions without an in-vocabulary answer are dropped and counted (either policy);
    in val they are kept with zero targets, as the official metric still scores them."""
    native.write_vqa2(str(tmp_path))
    vocabulary = tmp_path / "answers.json"
    vocabulary.write_text(json.dumps({"answers": ["red", "2"]}))  # "yes" is not in it
    for skip in (False, True):
        builder = make_builder("vqa2", str(tmp_path), skip_bad_records=skip,
                               processors={"answer": {"params": {"vocabulary_path": str(vocabulary)}}})
        train = builder.build("train")
        assert [r["question_id"] for r in train.records] == [1000, 1001]
        assert train.bad_record_report()["build"] == {"question without an in-vocabulary answer (training only)": 1}
    val = builder.build("val")[0]
    assert val.targets.tolist() == pytest.approx([0.6, 0.0])


def write_bad_row(tmp_path, **kwargs):
    facts = native.write_snli_ve(str(tmp_path))
    boxes = kwargs.pop("boxes", native.BOXES)
    features = kwargs.pop("features", native.region_features(101))
    with open(facts["features"]["tsv"], "w") as f:
        f.write(native.butd_line("100", native.BOXES, native.region_features(100)))
        f.write(native.butd_line("101", boxes, features, **kwargs))
        f.write(native.butd_line("102", native.BOXES, native.region_features(102)))
    return facts


@pytest.mark.parametrize("case,message", [
    ("num_boxes", "num_boxes is 5 but the boxes column holds 12 floats"),
    ("nan", "region features contain NaN or Inf"),
    ("outside", "a region box lies outside the 40x30 image"),
])
def test_bad_feature_row(tmp_path, case, message):
    if case == "num_boxes":
        facts = write_bad_row(tmp_path, num_boxes=5)
    elif case == "nan":
        features = native.region_features(101)
        features[0, 3] = np.nan
        facts = write_bad_row(tmp_path, features=features)
    else:
        facts = write_bad_row(tmp_path, boxes=[[2, 3, 12, 11], [20, 10, 55, 25], [0, 0, 40, 30]])
    strict = make_builder("snli_ve", str(tmp_path), "regions", facts["features"])
    assert strict.build("train")[0].region_features.shape == (3, native.D)
    with pytest.raises(DataError, match=rf"regions\.tsv: bad features at line 2 \(image_id 101\): {message}"):
        strict.build("train")[1]
    lenient = make_builder("snli_ve", str(tmp_path), "regions", facts["features"], skip_bad_records=True)
    dataset = lenient.build("train")
    assert dataset[1].image_id == "102" and dataset.bad_record_report()["load"] == {"features": 1}


def test_npy_num_boxes_mismatch(tmp_path):
    facts = native.write_snli_ve(str(tmp_path))
    npy = facts["features"]["npy"]
    np.save(os.path.join(npy, "101.npy"), native.region_features(101, n=2))
    with pytest.raises(DataError, match=r"101_info\.npy: bad features at image 101.*num_boxes is 3 but there are 3 boxes and 2"):
        make_builder("snli_ve", str(tmp_path), "regions", facts["features"], "npy").build("train")[1]


def test_missing_files_listed_in_one_error(tmp_path):
    native.write_vqa2(str(tmp_path))
    os.remove(tmp_path / "v2_mscoco_val2014_annotations.json")
    os.remove(tmp_path / "v2_OpenEnded_mscoco_val2014_questions.json")
    with pytest.raises(DataError) as error:
        make_builder("vqa2", str(tmp_path), processors={"answer": {"params": {"min_count": 1}}}).build("val")
    text = str(error.value)
    assert "2 expected file(s) missing" in text
    assert str(tmp_path / "v2_mscoco_val2014_annotations.json") in text
    assert str(tmp_path / "v2_OpenEnded_mscoco_val2014_questions.json") in text


def test_data_dir_required_and_no_fallback_to_shapes(tmp_path):
    from vlfw.registry import DATASETS

    builder = DATASETS.get("nlvr2")({}, "nlvr2")
    with pytest.raises(DataError, match=r"dataset_config\.nlvr2\.data_dir is not set.*source=shapes"):
        builder.build("train")
    with pytest.raises(DataError, match="does not exist"):
        make_builder("nlvr2", str(tmp_path / "nowhere")).build("train")


def test_refs_pickle_needs_latin1_retry(tmp_path):
    """The fixture's refs file fails a plain Python-3 unpickle; the builder retries as latin1."""
    import pickle

    native.write_refcoco(str(tmp_path))
    data = (tmp_path / "refcoco" / "refs(unc).p").read_bytes()
    with pytest.raises(UnicodeDecodeError):
        pickle.loads(data)
    from vlfw.datasets.refcoco import load_refs

    refs = load_refs(str(tmp_path / "refcoco" / "refs(unc).p"))
    assert refs[0]["sentences"][1]["sent"] == "the caf\u00e9 box"
    (tmp_path / "refcoco" / "refs(unc).p").write_bytes(data[:20])
    with pytest.raises(DataError, match=r"refs\(unc\)\.p: cannot unpickle"):
        load_refs(str(tmp_path / "refcoco" / "refs(unc).p"))


def test_nlvr2_bad_label_both_ways(tmp_path):
    native.write_nlvr2(str(tmp_path))
    path = tmp_path / "dev.json"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[1]["label"] = "maybe"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"dev\.json: bad record at line 2 \(dev-5-1-1\): label 'maybe'"):
        make_builder("nlvr2", str(tmp_path)).build("val")
    assert len(make_builder("nlvr2", str(tmp_path), skip_bad_records=True).build("val")) == 2
