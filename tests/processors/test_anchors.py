import json
import pickle
import re

import pytest
import torch

from vlfw.data.batch import Sample, collate
from vlfw.errors import ConfigError, DataError
from vlfw.processors.anchors import (
    AnchorPointDetector,
    CaptionWord,
    anchor_fields,
    build_anchor_processor,
    caption_words,
    find_anchors,
    region_tags,
)
from vlfw.processors.text import BertTokenizerProcessor
from vlfw.processors.thesaurus import Thesaurus, fold
from vlfw.registry import PROCESSORS
from vlfw.world.language import SHAPE_WORDS, plural

CLASSES = ["__background__", "dog", "carpet", "television", "traffic light", "light", "square"]


@pytest.fixture(scope="module")
def tokenizer():
    return BertTokenizerProcessor(max_length=40)


@pytest.fixture(scope="module")
def thesaurus_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("thesaurus") / "tiny.json"
    path.write_text(json.dumps({
        "format": "vlfw-thesaurus", "version": 1,
        "terms": {"traffic light": []},
        "synonyms": {"carpet": ["rug"], "square": ["box", "block", "cube"]},
        "abbreviations": {"television": ["tv"]},
    }), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def detector(thesaurus_file, tokenizer):
    return AnchorPointDetector(thesaurus=thesaurus_file, class_names=CLASSES, tokenizer=tokenizer)


def scores(*classes, num_classes=len(CLASSES)):
    """Region class scores whose argmax per region is the given class index."""
    probs = torch.full((len(classes), num_classes), 0.5 / num_classes)
    for region, index in enumerate(classes):
        probs[region, index] = 0.5 + 0.5 / num_classes
    return probs


def anchored(detector, caption, *classes, num_classes=None):
    """[(region, words of the anchor's tokens as decoded text)] for a caption and region classes."""
    encoding = detector.tokenizer(caption)
    anchors = detector(encoding, scores(*classes, num_classes=num_classes or len(detector.class_names)))
    ids = encoding["input_ids"]
    return [(a.region, detector.tokenizer.decode(ids[list(a.tokens)])) for a in anchors]


# -- one case per normalisation kind ------------------------------------------------------------

def test_case(detector):
    assert anchored(detector, "A DOG sleeps", 1) == [(0, "dog")]


def test_plural(detector):
    assert anchored(detector, "two dogs and a carpet", 2, 1) == [(1, "dogs"), (0, "carpet")]


def test_synonym(detector):
    assert anchored(detector, "a rug on the floor", 2) == [(0, "rug")]


def test_sub_word_pieces_are_merged(detector, tokenizer):
    encoding = tokenizer("three red cubes")
    assert tokenizer.tokenizer.convert_ids_to_tokens(encoding["input_ids"].tolist()) == \
        ["[CLS]", "three", "red", "cube", "##s", "[SEP]"]
    anchors = detector(encoding, scores(6))
    assert [(a.region, a.tokens, a.term) for a in anchors] == [(0, (3, 4), "square")]


def test_abbreviation(detector):
    assert anchored(detector, "a TV in the corner", 3) == [(0, "tv")]


def test_multiword_tag_as_phrase_and_as_its_words(detector):
    encoding = detector.tokenizer("the traffic light is red")
    anchors = detector(encoding, scores(4))
    assert [(a.region, a.tokens, a.term) for a in anchors] == [(0, (2, 3), "traffic light")]
    # the caption's phrase is one anchor; a region tagged "light" does not take its second word
    assert anchored(detector, "the traffic light is red", 5) == []
    # a word of a multi-word tag alone
    assert anchored(detector, "a light above the road", 4) == [(0, "light")]


def test_caption_without_anchor_is_empty(detector):
    encoding = detector.tokenizer("nothing to see here")
    assert detector(encoding, scores(1, 2, 3)) == []
    fields = detector.sample_fields(encoding, scores(1, 2, 3))
    assert fields["anchor_region_index"].shape == (0,)
    assert fields["anchor_token_mask"].shape == (0, len(encoding["input_ids"]))


def test_background_region_makes_no_anchor(detector):
    # region 0's argmax is the background column; its scores for "dog" are second best
    probs = scores(0, 1)
    probs[0, 1] = probs[0, 0] - 0.01
    assert [a.region for a in detector(detector.tokenizer("a dog"), probs)] == [1]
    assert region_tags(probs, CLASSES) == [None, "dog"]
    assert region_tags(probs, CLASSES, background="__background__") == [None, "dog"]
    assert region_tags(probs, CLASSES, background=None) == ["__background__", "dog"]


def test_a_background_named_in_the_caption_is_no_anchor(tokenizer, thesaurus_file):
    names = ["background", "dog"]
    detector = AnchorPointDetector(thesaurus=thesaurus_file, class_names=names, background="background",
                                   tokenizer=tokenizer)
    assert anchored(detector, "a dog on a grey background", 0, 1) == [(1, "dog")]


def test_several_regions_of_one_class_anchor_the_same_word(detector):
    encoding = detector.tokenizer("dogs on a rug")
    anchors = detector(encoding, scores(1, 2, 1, 0, 1))
    assert [(a.region, a.tokens) for a in anchors] == [(0, (1,)), (2, (1,)), (4, (1,)), (1, (4,))]


def test_visual_genome_layout_names_one_fewer_than_scores():
    names = CLASSES[1:]  # 1600 names for 1601 scores, column 0 the background
    assert region_tags(scores(0, 1, 6), names) == [None, "dog", "square"]
    with pytest.raises(ValueError, match="5 detector class names for 7 class scores"):
        region_tags(scores(1), names[:5])


def test_caption_words_merge_pieces_and_keep_positions():
    tokens = ["[CLS]", "a", "lo", "##zen", "##ge", ",", "cube", "##s", "[SEP]"]
    word_ids = [None, 0, 1, 1, 1, 2, 3, 3, None]
    assert caption_words(tokens, word_ids) == [CaptionWord("a", (1,)), CaptionWord("lozenge", (2, 3, 4)),
                                               CaptionWord(",", (5,)), CaptionWord("cubes", (6, 7))]
    bpe = caption_words(["<s>", "\u0120cub", "es", "</s>"], [None, 0, 0, None], None,
                        lambda pieces: "".join(pieces).replace("\u0120", " "))
    assert bpe == [CaptionWord("cubes", (1, 2))]


def test_find_anchors_on_plain_words():
    thesaurus = Thesaurus.load("shapes")
    tags = ["square", None, "circle", "square"]
    anchors = find_anchors(tags, ["Two", "BOXES", "and", "a", "ball"], thesaurus)
    assert [(a.region, a.tokens, a.term) for a in anchors] == [(0, (1,), "square"), (3, (1,), "square"),
                                                                (2, (4,), "circle")]


def test_byte_level_bpe_tokenizer(roberta_tokenizer_dir):
    from vlfw.processors.text import HFTokenizerProcessor

    tokenizer = HFTokenizerProcessor(path=roberta_tokenizer_dir)
    detector = AnchorPointDetector(thesaurus="shapes", class_names=["__background__", "circle", "square"],
                                   tokenizer=tokenizer)
    encoding = tokenizer("Two red squares and a box")
    anchors = detector(encoding, scores(2, 1, num_classes=3))
    words = [w.text for w in detector.words(encoding)]
    assert words == ["Two", "red", "squares", "and", "a", "box"]
    assert [a.region for a in anchors] == [0, 0]
    assert [tokenizer.decode(encoding["input_ids"][list(a.tokens)]).strip() for a in anchors] == ["squares", "box"]


# -- the processor ------------------------------------------------------------------------------

def test_registered_and_pickles(detector):
    assert PROCESSORS.get("anchor_points") is AnchorPointDetector
    copy = pickle.loads(pickle.dumps(detector))
    assert anchored(copy, "a rug", 2) == [(0, "rug")]


def test_class_names_from_a_file(tmp_path, tokenizer, thesaurus_file):
    path = tmp_path / "objects_vocab.txt"
    path.write_text("dog\ncarpet\n", encoding="utf-8")  # VG style: no background line, 3 score columns
    detector = AnchorPointDetector(thesaurus=thesaurus_file, class_names=str(path), tokenizer=tokenizer)
    assert anchored(detector, "a dog on a rug", 0, 1, 2, num_classes=3) == [(1, "dog"), (2, "rug")]


@pytest.mark.parametrize("text,message", [('{"0": "dog"}', "is a list of class name strings"),
                                          ('["dog", 3]', "is a list of class name strings"),
                                          ('["dog",', "not valid JSON at line 1")])
def test_bad_class_file_is_a_data_error_naming_it(tmp_path, tokenizer, thesaurus_file, text, message):
    path = tmp_path / "classes.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=message) as caught:
        AnchorPointDetector(thesaurus=thesaurus_file, class_names=str(path), tokenizer=tokenizer)
    assert str(caught.value).startswith(str(path))


def test_errors_are_clear(detector, tokenizer, thesaurus_file):
    with pytest.raises(DataError, match="needs the regions' detector class scores"):
        detector(tokenizer("a dog"), None)
    with pytest.raises(DataError, match="7 detector class names for 3 class scores"):
        detector(tokenizer("a dog"), scores(1, num_classes=3))
    no_names = AnchorPointDetector(thesaurus=thesaurus_file, tokenizer=tokenizer)
    with pytest.raises(ConfigError, match="set params.class_names"):
        no_names(tokenizer("a dog"), scores(1))
    with pytest.raises(ConfigError, match="no shipped thesaurus of that name"):
        AnchorPointDetector(thesaurus="no_such_thesaurus", tokenizer=tokenizer)


def test_fields_collate_with_masks(detector, tokenizer):
    samples = []
    for caption, classes in (("two dogs on a rug", (1, 1, 2)), ("nothing here", (1,))):
        encoding = tokenizer(caption)
        sample = Sample(input_ids=encoding["input_ids"])
        sample.update(detector.sample_fields(encoding, scores(*classes)))
        samples.append(sample)
    batch = collate(samples)
    assert batch.anchor_region_index.shape == (2, 3)
    assert batch.anchor_mask.tolist() == [[True, True, True], [False, False, False]]
    assert batch.anchor_region_index[0].tolist() == [0, 1, 2]
    assert batch.anchor_token_index[0].tolist() == [2, 2, 5]
    assert batch.anchor_token_mask.shape == (2, 3, batch.input_ids.shape[1])
    assert batch.anchor_token_mask[0, 0].nonzero().flatten().tolist() == [2]
    assert not batch.anchor_token_mask[1].any()


def test_anchor_fields_of_a_phrase():
    from vlfw.processors.anchors import AnchorPoint

    fields = anchor_fields([AnchorPoint(3, (2, 3), "traffic light")], 6)
    assert fields["anchor_token_index"].tolist() == [2]
    assert fields["anchor_token_mask"].tolist() == [[False, False, True, True, False, False]]


# -- real samples of the Shapes world -----------------------------------------------------------

def shape_word_pattern(shape):
    forms = sorted({f for w in SHAPE_WORDS[shape] for f in (w, plural(w))}, key=len, reverse=True)
    return re.compile(r"\b(" + "|".join(re.escape(f) for f in forms) + r")\b")


@pytest.fixture()
def anchored_captions_builder():
    """coco_retrieval with a `processors.anchors` role, the way a CMAL builder declares it."""
    from vlfw.datasets.captions import CocoRetrievalBuilder
    from vlfw.datasets.common import dataset_defaults
    from vlfw.registry import DATASETS

    class AnchoredCaptions(CocoRetrievalBuilder):
        BENCHMARK = "coco_retrieval"
        DEFAULT_CONFIG = dataset_defaults(**{**CocoRetrievalBuilder.DEFAULT_CONFIG, "processors": {
            **CocoRetrievalBuilder.DEFAULT_CONFIG["processors"], "anchors": {"type": None, "params": {}}}})

    DATASETS.register("test_anchored_captions")(AnchoredCaptions)
    yield "test_anchored_captions"
    DATASETS.remove("test_anchored_captions")


def test_shapes_world_coco_captions(shapes_tiny_root, anchored_captions_builder):
    from vlfw.testing import shapes_builder

    builder = shapes_builder(anchored_captions_builder, visual="regions", features={"format": "npy"},
                             processors={"anchors": {"type": "anchor_points", "params": {"thesaurus": "shapes"}}})
    detector = build_anchor_processor(builder)
    assert detector.class_names[0] == "__background__" and "square" in detector.class_names
    dataset = builder.build("train")
    patterns = {shape: shape_word_pattern(shape) for shape in SHAPE_WORDS}
    with_anchor = 0
    for index in range(len(dataset)):
        record, sample = dataset.records[index], dataset[index]
        encoding = builder.text_processor(record["caption"])
        assert torch.equal(encoding["input_ids"], sample.input_ids)
        anchors = detector(encoding, sample.region_class_probs)
        tags = region_tags(sample.region_class_probs, detector.class_names)
        with_anchor += bool(anchors)
        for anchor in anchors:
            # the region's detector class is the class the generator's word names
            assert tags[anchor.region] == anchor.term
            text = builder.text_processor.decode(sample.input_ids[list(anchor.tokens)])
            assert patterns[anchor.term].fullmatch(fold(text).replace(" - ", "-")), (record["caption"], text)
        # and every shape word the generator wrote anchors each region of that class
        caption = record["caption"].lower()
        for shape, pattern in patterns.items():
            expected = len(pattern.findall(caption)) * tags.count(shape)
            assert sum(a.term == shape for a in anchors) == expected, (record["caption"], shape, tags)
    assert with_anchor >= 0.7 * len(dataset), f"{with_anchor} of {len(dataset)} captions have an anchor"


def test_anchor_processor_off_when_not_configured(shapes_tiny_root, anchored_captions_builder):
    from vlfw.testing import shapes_builder

    builder = shapes_builder(anchored_captions_builder, visual="regions", features={"format": "npy"})
    assert build_anchor_processor(builder) is None
