import pytest
import torch

from vlfw.data.batch import Sample, collate
from vlfw.processors.anchors import AnchorPoint, anchor_fields
from vlfw_cmal import CrossModalAssociativePrompt, TextualUMSE, VisualUMSE, box_geometry, scan_anchors

HIDDEN = 16


def anchor_batch(per_sample, lengths):
    """Collated anchor fields for samples given as [(region, (token positions))] lists."""
    samples = []
    for anchors, length in zip(per_sample, lengths):
        sample = Sample(input_ids=torch.ones(length, dtype=torch.long))
        sample.update(anchor_fields([AnchorPoint(r, tuple(t), "x") for r, t in anchors], length))
        samples.append(sample)
    return collate(samples)


def states(batch=3, regions=5, length=7, seed=0):
    generator = torch.Generator().manual_seed(seed)
    visual = torch.randn(batch, 1 + regions, HIDDEN, generator=generator)
    text = torch.randn(batch, length, HIDDEN, generator=generator)
    return visual, torch.ones(batch, 1 + regions, dtype=torch.bool), text, torch.ones(batch, length, dtype=torch.bool)


def build(cmap, visual, visual_mask, text, text_mask, batch, seed=0, **kwargs):
    return cmap.build(visual, visual_mask, text, text_mask, batch.anchor_region_index, batch.anchor_token_index,
                      batch.anchor_token_mask, batch.anchor_mask, generator=torch.Generator().manual_seed(seed), **kwargs)


def test_swapped_slots_hold_exactly_the_other_modalitys_umse_state():
    visual, visual_mask, text, text_mask = states()
    batch = anchor_batch([[(1, [2]), (4, [5])], [], [(0, [1])]], [7, 7, 7])
    cmap = CrossModalAssociativePrompt(HIDDEN, swap_probability=1.0)
    hybrid = build(cmap, visual, visual_mask, text, text_mask, batch)
    regions = 5
    assert hybrid.features.shape == (4, 1 + regions + 1 + 6, HIDDEN)  # [CLS] regions [SEP] tokens 1..L-1
    assert hybrid.rows.tolist() == [0, 0, 1, 2]  # one row per anchor, one for the sample without any
    assert hybrid.swapped.tolist() == [True, True, False, True]
    for row in range(4):
        sample = int(hybrid.rows[row])
        if not hybrid.swapped[row]:
            continue
        i, j = int(hybrid.region_index[row]), int(hybrid.token_index[row])
        assert int(hybrid.region_slot[row]) == 1 + i and int(hybrid.word_slot[row]) == regions + 1 + j
        assert torch.equal(hybrid.features[row, 1 + i], text[sample, j])  # region slot <- word j's state
        assert torch.equal(hybrid.features[row, regions + 1 + j], visual[sample, 1 + i])  # word slot <- region i's
        # every other slot holds its own modality's state
        for other in range(regions):
            if other != i:
                assert torch.equal(hybrid.features[row, 1 + other], visual[sample, 1 + other])
        for token in range(1, 7):
            if token != j:
                assert torch.equal(hybrid.features[row, regions + 1 + token], text[sample, token])
    assert {(int(hybrid.region_index[r]), int(hybrid.token_index[r])) for r in (0, 1)} == {(1, 2), (4, 5)}
    # the sample without anchors is the plain sequence
    assert torch.equal(hybrid.features[2, 1:1 + regions], visual[1, 1:])
    assert torch.equal(hybrid.features[2, regions + 2:], text[1, 1:])
    assert torch.equal(hybrid.features[2, 0], cmap.cls_embedding.detach())
    assert torch.equal(hybrid.features[2, regions + 1], cmap.sep_embedding.detach())


def test_masked_without_swap_holds_the_mask_embedding_and_the_rest_of_the_word_is_masked():
    visual, visual_mask, text, text_mask = states(batch=1)
    batch = anchor_batch([[(3, [2, 3])]], [7])  # a word of two pieces at tokens 2 and 3
    cmap = CrossModalAssociativePrompt(HIDDEN, swap_probability=0.0)
    hybrid = build(cmap, visual, visual_mask, text, text_mask, batch)
    mask = cmap.mask_embedding.detach()
    assert hybrid.masked.tolist() == [True] and hybrid.swapped.tolist() == [False]
    assert torch.equal(hybrid.features[0, 1 + 3], mask)
    assert torch.equal(hybrid.features[0, 5 + 1 + 2], mask) and torch.equal(hybrid.features[0, 5 + 1 + 3], mask)
    assert torch.equal(hybrid.features[0, 5 + 1 + 4], text[0, 4])
    swapper = CrossModalAssociativePrompt(HIDDEN, swap_probability=1.0)
    swapping = build(swapper, visual, visual_mask, text, text_mask, batch)
    assert torch.equal(swapping.features[0, 5 + 1 + 2], visual[0, 1 + 3])  # the word's slot is swapped,
    assert torch.equal(swapping.features[0, 5 + 1 + 3], swapper.mask_embedding.detach())  # its other piece masked


def test_swap_probability_is_about_point_six():
    visual, visual_mask, text, text_mask = states(batch=1)
    batch = anchor_batch([[(k % 5, [1 + k % 6]) for k in range(40)]], [7])
    cmap = CrossModalAssociativePrompt(HIDDEN)
    swapped = torch.cat([build(cmap, visual, visual_mask, text, text_mask, batch, seed=s).swapped for s in range(50)])
    assert swapped.numel() == 2000
    assert 0.56 < swapped.float().mean().item() < 0.64


def test_scan_modes():
    anchor_mask = torch.tensor([[True, True, True], [False, False, False], [True, False, False]])
    rows, anchor = scan_anchors(anchor_mask, 3, "each", generator=torch.Generator().manual_seed(0))
    assert sorted(zip(rows.tolist(), anchor.tolist())) == [(0, 0), (0, 1), (0, 2), (1, -1), (2, 0)]
    rows, anchor = scan_anchors(anchor_mask, 3, "one", generator=torch.Generator().manual_seed(0))
    assert rows.tolist() == [0, 1, 2] and anchor[0] in (0, 1, 2) and anchor.tolist()[1:] == [-1, 0]
    rows, anchor = scan_anchors(anchor_mask, 3, "none")
    assert rows.tolist() == [0, 1, 2] and anchor.tolist() == [-1, -1, -1]
    rows, _ = scan_anchors(anchor_mask, 3, "each", max_per_sample=2)
    assert rows.tolist() == [0, 0, 1, 2]
    with pytest.raises(ValueError, match="each, one, none"):
        scan_anchors(anchor_mask, 3, "all")


def test_embeddings_and_gradients_flow_to_both_encoders():
    torch.manual_seed(0)
    visual_encoder = VisualUMSE(feature_size=12, hidden_size=HIDDEN, num_heads=2)
    text_encoder = TextualUMSE(vocab_size=30, hidden_size=HIDDEN, num_heads=2, max_length=16)
    features, boxes = torch.rand(2, 4, 12), torch.tensor([[[0.0, 0.0, 10.0, 20.0]] * 4] * 2)
    image_size = torch.tensor([[20.0, 40.0], [20.0, 40.0]])
    assert box_geometry(boxes, image_size)[0, 0].tolist() == [0.0, 0.0, 0.5, 0.5, 0.5, 0.5, 0.25]
    visual, visual_mask = visual_encoder(features, boxes, image_size, torch.ones(2, 4, dtype=torch.bool))
    input_ids = torch.tensor([[1, 5, 6, 2, 0], [1, 7, 2, 0, 0]])
    text, text_mask = text_encoder(input_ids, input_ids != 0)
    assert visual.shape == (2, 5, HIDDEN) and text.shape == (2, 5, HIDDEN)
    batch = anchor_batch([[(2, [1])], [(0, [1])]], [5, 5])
    cmap = CrossModalAssociativePrompt(HIDDEN, swap_probability=1.0)
    hybrid = cmap(visual, visual_mask, text, text_mask, batch.anchor_region_index, batch.anchor_token_index,
                  batch.anchor_token_mask, batch.anchor_mask, generator=torch.Generator().manual_seed(0))
    assert hybrid.embeddings.shape == (2, 1 + 4 + 1 + 4, HIDDEN)
    assert hybrid.mask[1].tolist() == [True] * 6 + [True, True, False, False]
    # the swapped word slot's content comes from the visual encoder: its gradient reaches it
    hybrid.embeddings[0, hybrid.word_slot[0]].sum().backward()
    assert visual_encoder.feature.weight.grad.abs().sum() > 0
