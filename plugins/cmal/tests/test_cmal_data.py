import pickle

import pytest
import torch

from vlfw.errors import ConfigError
from vlfw.processors.thesaurus import Thesaurus
from vlfw.testing import shapes_builder
from vlfw_cmal import CrossModalAssociativePrompt, TextualUMSE, VisualUMSE

HIDDEN = 16


@pytest.fixture(scope="module")
def builder(shapes_tiny_root):
    return shapes_builder("cmal_coco_captions")


def test_training_samples_carry_anchors_and_the_mapper_pickles(builder):
    dataset = builder.build("train")
    mapper = pickle.loads(pickle.dumps(dataset.mapper))
    thesaurus = Thesaurus.load("shapes")
    names = builder.anchor_processor.class_names
    with_anchor = 0
    for index in range(0, len(dataset), 3):
        sample = mapper(dataset.records[index], index, dataset.generator(index))
        count = len(sample.anchor_region_index)
        with_anchor += count > 0
        assert sample.anchor_token_mask.shape == (count, len(sample.input_ids))
        classes = sample.region_class_probs.argmax(dim=1)
        for k, region in enumerate(sample.anchor_region_index.tolist()):
            tokens = sample.anchor_token_mask[k].nonzero().flatten()
            assert int(tokens[0]) == int(sample.anchor_token_index[k])
            word = builder.text_processor.decode(sample.input_ids[tokens])
            assert thesaurus.normalise(word) == names[int(classes[region])], word
    assert with_anchor >= 0.7 * len(range(0, len(dataset), 3))


def test_evaluation_samples_have_no_anchors(builder):
    sample = builder.build("val")[0]
    assert sample.input_ids.dim() == 2 and "anchor_mask" not in sample


def test_anchors_can_be_turned_off(shapes_tiny_root):
    off = shapes_builder("cmal_coco_captions", processors={"anchors": {"type": None}})
    assert off.anchor_processor is None
    assert "anchor_mask" not in off.build("train")[0]


def test_unknown_thesaurus_is_a_config_error(shapes_tiny_root):
    bad = shapes_builder("cmal_coco_captions", processors={"anchors": {"params": {"thesaurus": "nope"}}})
    with pytest.raises(ConfigError, match="thesaurus 'nope'"):
        bad.build("train")


def test_a_real_batch_through_umse_and_cmap(builder):
    torch.manual_seed(0)
    dataset = builder.build("train")
    samples = [dataset[i] for i in range(8)]
    batch = builder.collate(samples)
    info = builder.task_info()
    visual_encoder = VisualUMSE(info.region_feature_size, HIDDEN, num_heads=2).eval()
    text_encoder = TextualUMSE(info.text.vocab_size, HIDDEN, num_heads=2, max_length=64).eval()
    visual, visual_mask = visual_encoder(batch.region_features, batch.region_boxes, batch.image_size, batch.region_mask)
    text, text_mask = text_encoder(batch.input_ids, batch.attention_mask)
    cmap = CrossModalAssociativePrompt(HIDDEN, swap_probability=1.0).eval()
    hybrid = cmap(visual, visual_mask, text, text_mask, batch.anchor_region_index, batch.anchor_token_index,
                  batch.anchor_token_mask, batch.anchor_mask, generator=torch.Generator().manual_seed(0))
    assert len(hybrid.rows) == sum(max(1, int(m.sum())) for m in batch.anchor_mask)
    assert bool(hybrid.swapped.any())
    for row in hybrid.swapped.nonzero().flatten().tolist():
        b, i, j = int(hybrid.rows[row]), int(hybrid.region_index[row]), int(hybrid.token_index[row])
        assert torch.equal(hybrid.features[row, hybrid.region_slot[row]], text[b, j])
        assert torch.equal(hybrid.features[row, hybrid.word_slot[row]], visual[b, 1 + i])
    assert hybrid.embeddings.shape == hybrid.features.shape
