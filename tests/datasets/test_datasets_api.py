"""The builder API: pure records(split), a picklable mapper without the builder, the
RecordDataset of both, processors by registry name, pad values from the tokenizer, and Shapes
sources prepared before any builder is built."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
import torch
from dataset_helpers import make_builder, native

from vlfw.datasets.base import RecordDataset, SampleMapper
from vlfw.datasets.records import BadRecordCounter, Records
from vlfw.errors import ConfigError, DataError


def roberta_text(directory: str, max_length: int = 64) -> dict:
    return {"text": {"type": "hf_tokenizer", "params": {"path": directory, "max_length": max_length}}}


def test_records_are_plain_data_and_build_no_processor(tmp_path):
    native.write_snli_ve(str(tmp_path))
    builder = make_builder("snli_ve", str(tmp_path))
    records = builder.records("train")
    assert isinstance(records, Records) and isinstance(records, list) and len(records) == 3
    assert isinstance(records.bad, BadRecordCounter) and records.bad.report() == {"build": {}, "load": {}}
    assert all(isinstance(r, dict) for r in records) and records[0]["hypothesis"]
    pickle.dumps(list(records))  # plain data
    assert builder._text is None and builder._image is None  # no processor built by records()
    dataset = builder.build("train")
    assert isinstance(dataset, RecordDataset) and dataset.records == list(records)


def test_records_count_bad_records(tmp_path):
    native.write_nlvr2(str(tmp_path))
    path = tmp_path / "dev.json"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "{not json", *lines[1:]]) + "\n")
    records = make_builder("nlvr2", str(tmp_path), skip_bad_records=True).records("val")
    assert len(records) == 3 and sum(records.bad.report()["build"].values()) == 1
    with pytest.raises(DataError, match=r"dev\.json: bad record at line 2: not valid JSON"):
        make_builder("nlvr2", str(tmp_path)).records("val")


@pytest.mark.parametrize("name,writer", [("vqa2", native.write_vqa2), ("cc3m", native.write_cc3m),
                                         ("refcoco", native.write_refcoco), ("vcr", native.write_vcr)])
def test_mapper_pickles_without_the_builder(tmp_path, name, writer):
    writer(str(tmp_path))
    config = {"processors": {"answer": {"params": {"min_count": 1}}}} if name == "vqa2" else {}
    builder = make_builder(name, str(tmp_path), **config)
    dataset = builder.build("train")
    mapper = dataset.mapper
    assert isinstance(mapper, SampleMapper)
    data = pickle.dumps(mapper)
    assert type(builder).__name__.encode() not in data  # no back-reference to the builder
    clone = pickle.loads(data)
    direct = clone(dataset.records[0], 0, dataset.generator(0))
    expected = dataset[0]
    assert sorted(direct) == sorted(expected)
    for key, value in expected.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(direct[key], value), key
        else:
            assert direct[key] == value, key
    assert pickle.loads(pickle.dumps(dataset))[0].keys() == expected.keys()


def test_processors_by_registry_name_and_config_errors(tmp_path):
    native.write_snli_ve(str(tmp_path))
    from vlfw.registry import DATASETS

    defaults = DATASETS.get("snli_ve").DEFAULT_CONFIG["processors"]
    assert defaults["text"] == {"type": "bert_tokenizer", "params": {"vocab_path": None, "max_length": 40, "lowercase": True}}
    assert defaults["image"] == {"type": "image_transform", "params": {"size": 224, "train_augment": None}}
    with pytest.raises(ConfigError, match=r"processors\.image\.size.*processors\.image\.params\.size"):
        make_builder("snli_ve", str(tmp_path), processors={"image": {"size": 64}}).build("train")
    with pytest.raises(ConfigError, match=r"processors\.text\.params\.max_len .*bert_tokenizer.*Did you mean: max_length"):
        make_builder("snli_ve", str(tmp_path), processors={"text": {"params": {"max_len": 9}}}).build("train")
    from vlfw.registry import RegistryError

    with pytest.raises(RegistryError, match="bert_tokeniser"):
        make_builder("snli_ve", str(tmp_path), processors={"text": {"type": "bert_tokeniser"}}).build("train")


def test_builder_defaults_losses_weights_and_generation():
    from vlfw.datasets.common import NativeBuilder
    from vlfw.registry import DATASETS

    for name in DATASETS.names():
        if not issubclass(DATASETS.get(name), NativeBuilder):
            continue  # e.g. the runner tests' toy builders
        config = DATASETS.get(name).DEFAULT_CONFIG
        assert config["loss_weights"] == {}
        assert all(set(loss) == {"type", "params"} for loss in config["losses"]), name
        for role, node in config["processors"].items():
            assert set(node) == {"type", "params"}, (name, role)
    assert DATASETS.get("vcr").DEFAULT_CONFIG["processors"]["text"]["params"]["max_length"] == 64
    for name in ("coco_captioning", "flickr30k_captioning"):
        assert DATASETS.get(name).DEFAULT_CONFIG["generation"] == {"max_length": 30, "num_beams": 5,
                                                                    "length_penalty": 1.0, "min_length": 1}
    assert "generation" not in DATASETS.get("coco_retrieval").DEFAULT_CONFIG
    cc3m = DATASETS.get("cc3m").DEFAULT_CONFIG["processors"]
    assert cc3m["masking"] == {"type": "whole_word_masking", "params": {"probability": 0.15}}
    assert cc3m["region_masking"] == {"type": "region_masking", "params": {"probability": 0.0}}


# -- a RoBERTa-style tokenizer through the builders ----------------------------------------------


def test_vcr_object_ids_align_with_a_roberta_layout(tmp_path, roberta_tokenizer_dir):
    native.write_vcr(str(tmp_path))
    builder = make_builder("vcr", str(tmp_path), processors=roberta_text(roberta_tokenizer_dir))
    tok = builder.text_processor
    assert type(tok).__name__ == "HFTokenizerProcessor" and tok.max_length == 64
    sample = builder.build("train")[0]
    ids, objects = sample.answer_input_ids[0].tolist(), sample.answer_object_ids[0].tolist()
    # <s> what is person doing ? </s></s> person is walking dog . </s>
    assert ids[0] == 0 and ids.count(2) == 3 and ids[ids.index(2) + 1] == 2
    assert all(o == -1 for t, o in zip(ids, objects) if t in (0, 2))
    person_in_a, dog_in_b = tok.tokenize_words(["is", "person"])[1], tok.tokenize_words(["walking", "dog"])[1]
    for piece in person_in_a:  # every token of each rendered name carries its object index
        assert [objects[i] for i, t in enumerate(ids) if t == piece] == [0]
    assert [objects[i] for i, t in enumerate(ids) if t in dog_in_b] == [1] * len(dog_in_b)
    first_b = ids.index(2) + 2  # "person" opens text b: tokenized without a leading space
    assert objects[first_b] == 0 and tok.decode(ids[first_b:]).startswith("person is walking dog")
    # answer 2 "[0, 2] talk": question's " person" (0), then b's "person" (0) "and" " person" (2)
    spaced, opening = len(tok.tokenize_words(["x", "person"])[1]), len(tok.tokenize_words(["person"])[0])
    assert [o for o in sample.answer_object_ids[2].tolist() if o >= 0] == [0] * spaced + [0] * opening + [2] * spaced
    test = builder.build("test")
    batch = builder.collate([test[0], builder.build("test")[0]])
    padded = ~batch.answer_attention_mask
    assert padded.any() and (batch.answer_input_ids[padded] == 1).all()  # RoBERTa pads with 1
    assert (batch.answer_object_ids[padded] == -1).all()
    lengths = (batch.answer_input_ids != 1).sum(-1)
    assert torch.equal(batch.answer_attention_mask.sum(-1), lengths)
    info = builder.task_info()
    assert (info.text.pad_id, info.text.cls_id, info.text.sep_id, info.text.mask_id) == (1, 0, 2, 4)
    assert info.text.processor == {"type": "hf_tokenizer", "params": {"path": roberta_tokenizer_dir, "max_length": 64}}
    assert info.text.build_tokenizer()("a dog")["input_ids"].tolist() == tok("a dog")["input_ids"].tolist()


def test_cc3m_masking_and_retrieval_padding_with_roberta(tmp_path, roberta_tokenizer_dir):
    (tmp_path / "cc3m").mkdir()
    native.write_cc3m(str(tmp_path / "cc3m"))
    builder = make_builder("cc3m", str(tmp_path / "cc3m"), processors={
        **roberta_text(roberta_tokenizer_dir, 24), "masking": {"params": {"probability": 0.5}}})
    dataset = builder.build("train")
    sample = dataset[1]
    encoded = builder.text_processor(sample.caption)
    chosen = sample.mlm_labels != -100
    assert chosen.any() and not chosen[0] and not chosen[-1]
    assert torch.equal(sample.mlm_labels[chosen], encoded["input_ids"][chosen])
    assert torch.equal(sample.input_ids[~chosen], encoded["input_ids"][~chosen])
    words = encoded["word_ids"]
    for word in set(w for w in words if w is not None):
        assert len({bool(c) for c, w in zip(chosen.tolist(), words) if w == word}) == 1
    batch = builder.collate([dataset[i] for i in range(len(dataset))])
    assert (batch.input_ids[~batch.attention_mask] == 1).all() and (batch.mlm_labels[~batch.attention_mask] == -100).all()

    (tmp_path / "coco").mkdir()
    native.write_karpathy(str(tmp_path / "coco"), "coco")
    retrieval = make_builder("coco_retrieval", str(tmp_path / "coco"), processors=roberta_text(roberta_tokenizer_dir))
    val = retrieval.build("val")[0]  # three captions of different lengths in one (K, L) tensor
    lengths = [len(retrieval.text_processor(c)["input_ids"]) for c in ["One", "Two things", "Three small things"]]
    assert val.input_ids.shape == (3, max(lengths))
    for row, n in zip(val.input_ids.tolist(), lengths):
        assert row[n:] == [1] * (len(row) - n)


# -- Shapes sources --------------------------------------------------------------------------------


def test_builders_never_generate_and_prepare_sources_keeps_rng(tmp_path, monkeypatch):
    from vlfw.datasets import prepare_sources
    from vlfw.registry import DATASETS

    monkeypatch.setenv("VLFW_CACHE", str(tmp_path / "cache"))
    builder = DATASETS.get("snli_ve")({"source": "shapes", "shapes": {"size": "tiny", "seed": 3}}, "snli_ve")
    with pytest.raises(DataError, match=r"Shapes world \(size tiny, seed 3\) is not prepared.*vlfw_prepare shapes "
                                         r"--size tiny --seed 3"):
        builder.records("train")
    assert not (tmp_path / "cache" / "shapes" / "tiny_seed3").exists()

    config = {"datasets": ["snli_ve", "nlvr2", "vqa2"],
              "dataset_config": {"snli_ve": {"source": "shapes", "shapes": {"size": "tiny", "seed": 3}},
                                 "nlvr2": {"source": "shapes", "shapes": {"size": "tiny", "seed": 3}},
                                 "vqa2": {"source": "files", "data_dir": "/nowhere"}}}
    random.seed(11)
    np.random.seed(12)
    torch.manual_seed(13)
    states = random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state().clone()
    roots = prepare_sources(config)
    assert random.getstate() == states[0] and (np.random.get_state()[1] == states[1]).all()
    assert torch.equal(torch.get_rng_state(), states[2])  # the world's random CNN draws from a fork
    assert set(roots) == {"snli_ve", "nlvr2"} and roots["snli_ve"] == roots["nlvr2"]
    assert roots["snli_ve"].endswith("tiny_seed3")
    assert len(builder.records("train")) > 0
    assert prepare_sources(config) == roots  # found, not generated again
