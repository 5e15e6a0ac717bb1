"""FCOS target assignment and the target builders of the FIBER grounding stage."""

import math

import pytest
import torch

from vlfw_fiber import grounding


def _ranges(n, lo=0.0, hi=math.inf):
    return torch.tensor([[lo, hi]] * n)


def test_fcos_scale_ranges_are_the_fcos_defaults():
    assert grounding.fcos_scale_ranges([8, 16, 32, 64, 128]) == [(0, 64), (64, 128), (128, 256), (256, 512), (512, math.inf)]
    assert grounding.fcos_scale_ranges([4, 8]) == [(0, 32), (32, math.inf)]


def test_location_inside_and_outside_a_box():
    locations = torch.tensor([[20.0, 20.0], [5.0, 5.0], [10.0, 20.0], [39.0, 39.0]])  # inside, outside, on the edge, inside
    boxes = torch.tensor([[10.0, 10.0, 40.0, 40.0]])
    matched, distances = grounding.assign_fcos(locations, _ranges(4), torch.full((4,), 8.0), boxes, None)
    assert matched.tolist() == [0, -1, -1, 0]
    assert distances[0].tolist() == [10.0, 10.0, 20.0, 20.0]
    assert distances[1].tolist() == [0.0, 0.0, 0.0, 0.0]


def test_scale_range_decides_the_level():
    # the same point on two levels: its largest distance to the box (30) fits only level 1's range
    locations = torch.tensor([[20.0, 20.0], [20.0, 20.0]])
    ranges = torch.tensor([[0.0, 16.0], [16.0, 64.0]])
    boxes = torch.tensor([[10.0, 10.0, 50.0, 50.0]])
    matched, _ = grounding.assign_fcos(locations, ranges, torch.tensor([8.0, 16.0]), boxes, None)
    assert matched.tolist() == [-1, 0]


def test_smallest_area_box_wins_and_ties_go_to_the_first():
    locations = torch.tensor([[25.0, 25.0]])
    boxes = torch.tensor([[0.0, 0.0, 100.0, 100.0], [20.0, 20.0, 40.0, 40.0], [10.0, 10.0, 60.0, 60.0]])
    matched, distances = grounding.assign_fcos(locations, _ranges(1), torch.tensor([8.0]), boxes, None)
    assert matched.tolist() == [1]
    assert distances[0].tolist() == [5.0, 5.0, 15.0, 15.0]
    same_area = torch.tensor([[20.0, 20.0, 40.0, 40.0], [15.0, 15.0, 35.0, 35.0]])
    matched, _ = grounding.assign_fcos(locations, _ranges(1), torch.tensor([8.0]), same_area, None)
    assert matched.tolist() == [0]


def test_center_sampling_keeps_only_locations_near_the_centre():
    locations = torch.tensor([[50.0, 50.0], [15.0, 15.0], [60.0, 50.0]])
    boxes = torch.tensor([[10.0, 10.0, 90.0, 90.0]])
    strides = torch.full((3,), 8.0)
    without, _ = grounding.assign_fcos(locations, _ranges(3), strides, boxes, None)
    with_sampling, _ = grounding.assign_fcos(locations, _ranges(3), strides, boxes, 1.5)  # radius 12 px around (50, 50)
    assert without.tolist() == [0, 0, 0]
    assert with_sampling.tolist() == [0, -1, 0]


def test_no_boxes_gives_no_positives():
    matched, distances = grounding.assign_fcos(torch.rand(5, 2), _ranges(5), torch.ones(5), torch.zeros(0, 4), 1.5)
    assert matched.tolist() == [-1] * 5 and not distances.any()


def test_assigner_builds_token_box_and_centerness_targets():
    locations, strides, levels = grounding.level_locations([(4, 4), (2, 2)], [8, 16])
    assigner = grounding.FCOSAssigner([8, 16], center_sampling_radius=None, scale_ranges=[(0, 16), (16, math.inf)])
    small = [4.0, 4.0, 20.0, 20.0]  # distances <= 12 from its inside level-0 points
    large = [0.0, 0.0, 32.0, 32.0]
    targets = [{"boxes": torch.tensor([small, large]),
                "positive_map": torch.tensor([[1, 0, 0], [0, 1, 1]], dtype=torch.bool)},
               {"boxes": torch.zeros(0, 4), "positive_map": torch.zeros(0, 3, dtype=torch.bool)}]
    out = assigner(locations, strides, levels, targets, num_tokens=5)  # maps narrower than T are padded
    assert out["token_targets"].shape == (2, 20, 5)
    matched = out["matched"][0]
    # level 0 points (4, 4) .. (28, 28) step 8: (12, 12) is the only one inside the small box
    assert matched[:16].reshape(4, 4)[1, 1] == 0
    assert out["token_targets"][0, 5].tolist() == [1, 0, 0, 0, 0]
    assert out["centerness_targets"][0, 5] == pytest.approx(math.sqrt((8 / 8) * (8 / 8)))
    # level 1 point (8, 8): largest distance 24 >= 16, inside the large box only
    assert matched[16] == 1 and out["token_targets"][0, 16].tolist() == [0, 1, 1, 0, 0]
    assert out["box_targets"][0, 16].tolist() == large
    assert out["centerness_targets"][0, 16] == pytest.approx(math.sqrt((8 / 24) * (8 / 24)))
    assert (out["matched"][1] == -1).all() and not out["token_targets"][1].any()
    negative = out["matched"] < 0
    assert not out["centerness_targets"][negative].any() and not out["box_targets"][negative].any()


def test_target_errors_are_one_clear_line():
    assigner = grounding.FCOSAssigner([8])
    locations, strides, levels = grounding.level_locations([(2, 2)], [8])
    with pytest.raises(ValueError, match="degenerate"):
        assigner(locations, strides, levels, [{"boxes": torch.tensor([[5.0, 5.0, 5.0, 9.0]]),
                                               "positive_map": torch.ones(1, 2, dtype=torch.bool)}], 2)
    with pytest.raises(ValueError, match="no positive token"):
        assigner(locations, strides, levels, [{"boxes": torch.tensor([[1.0, 1.0, 5.0, 9.0]]),
                                               "positive_map": torch.zeros(1, 2, dtype=torch.bool)}], 2)
    with pytest.raises(ValueError, match="positive_map must be"):
        assigner(locations, strides, levels, [{"boxes": torch.tensor([[1.0, 1.0, 5.0, 9.0]]),
                                               "positive_map": torch.ones(2, 2, dtype=torch.bool)}], 2)


def test_rec_and_phrase_targets_from_batches():
    cls, sep = 101, 102
    input_ids = torch.tensor([[cls, 7, 8, sep, 0], [cls, 9, sep, 0, 0]])
    attention_mask = input_ids != 0
    rec = grounding.rec_targets({"input_ids": input_ids, "attention_mask": attention_mask,
                                 "gt_box": torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])}, [cls, sep])
    assert [t["boxes"].tolist() for t in rec] == [[[1.0, 2.0, 3.0, 4.0]], [[5.0, 6.0, 7.0, 8.0]]]
    assert rec[0]["positive_map"].tolist() == [[False, True, True, False, False]]
    assert rec[1]["positive_map"].tolist() == [[False, True, False, False, False]]

    # [CLS] phrase [SEP] sentence [SEP]; the second sample's chain has two boxes, the first one (+ padding)
    input_ids = torch.tensor([[cls, 7, sep, 7, 8, sep], [cls, 9, 10, sep, 9, sep]])
    token_type_ids = torch.tensor([[0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 1, 1]])
    gt_boxes = torch.tensor([[[1.0, 1.0, 4.0, 4.0], [0.0, 0.0, 0.0, 0.0]], [[2.0, 2.0, 6.0, 6.0], [3.0, 3.0, 9.0, 9.0]]])
    phrase = grounding.phrase_targets({"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
                                       "token_type_ids": token_type_ids, "gt_boxes": gt_boxes}, [cls, sep])
    assert phrase[0]["boxes"].shape == (1, 4) and phrase[1]["boxes"].shape == (2, 4)
    assert phrase[0]["positive_map"].tolist() == [[False, True, False, False, False, False]]
    assert phrase[1]["positive_map"].tolist() == [[False, True, True, False, False, False]] * 2


def test_span_positive_map():
    assert grounding.span_positive_map([(1, 3), (4, 5)], 6).int().tolist() == [[0, 1, 1, 0, 0, 0], [0, 0, 0, 0, 1, 0]]
    with pytest.raises(ValueError, match="not inside"):
        grounding.span_positive_map([(2, 9)], 6)
