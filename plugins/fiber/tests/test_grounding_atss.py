"""ATSS assignment (the paper's choice) on hand-made boxes."""

import pytest
import torch

from vlfw.processors.boxes import box_iou
from vlfw_fiber import grounding
from vlfw_fiber.grounding import atss


def test_anchors_are_squares_of_scale_times_stride():
    anchors = grounding.location_anchors(torch.tensor([[4.0, 4.0], [16.0, 16.0]]), torch.tensor([8.0, 32.0]))
    assert anchors.tolist() == [[-28.0, -28.0, 36.0, 36.0], [-112.0, -112.0, 144.0, 144.0]]


@pytest.mark.parametrize("box, level", [([32.0, 32.0, 96.0, 96.0], 0), ([0.0, 0.0, 256.0, 256.0], 1)])
def test_the_level_whose_anchors_fit_the_box_gets_the_positives(box, level):
    locations, strides, levels = grounding.level_locations([(32, 32), (8, 8)], [8, 32])  # anchors 64 and 256 px
    boxes = torch.tensor([box])
    matched, distances = grounding.assign_atss(locations, strides, levels, boxes)
    positive = matched >= 0
    assert int(positive.sum()) >= 1 and set(levels[positive].tolist()) == {level}
    # the rule by hand: 9 nearest per level, IoU >= mean + std (unbiased) of the candidates, centre inside
    candidates = atss.atss_candidates(locations, levels, boxes, 9)[:, 0]
    assert int(candidates.sum()) == 18
    ious = box_iou(grounding.location_anchors(locations, strides), boxes)[:, 0]
    threshold = ious[candidates].mean() + ious[candidates].std()
    inside = (locations[:, 0] > box[0]) & (locations[:, 0] < box[2]) & (locations[:, 1] > box[1]) & (locations[:, 1] < box[3])
    assert torch.equal(positive, candidates & (ious >= threshold) & inside)
    x, y = locations[positive][0].tolist()
    assert distances[positive][0].tolist() == [x - box[0], y - box[1], box[2] - x, box[3] - y]


def test_a_location_positive_for_two_boxes_takes_the_larger_iou():
    locations, strides, levels = grounding.level_locations([(16, 16)], [8])
    first, second = torch.tensor([[32.0, 32.0, 96.0, 96.0]]), torch.tensor([[36.0, 36.0, 100.0, 100.0]])
    alone_first, _ = grounding.assign_atss(locations, strides, levels, first)
    alone_second, _ = grounding.assign_atss(locations, strides, levels, second)
    joint, _ = grounding.assign_atss(locations, strides, levels, torch.cat([first, second]))
    shared = (alone_first >= 0) & (alone_second >= 0)
    assert locations[shared].tolist() == [[68.0, 68.0]]  # its anchor IS the second box (IoU 1 vs 0.78)
    assert joint[shared].tolist() == [1]
    assert (joint[(alone_first >= 0) & ~shared] == 0).all() and int((joint == 0).sum()) == 3


def test_small_levels_and_empty_images():
    locations, strides, levels = grounding.level_locations([(8, 8), (1, 1)], [8, 64])
    candidates = atss.atss_candidates(locations, levels, torch.tensor([[8.0, 8.0, 56.0, 56.0]]), 9)
    assert int(candidates[:64].sum()) == 9 and int(candidates[64:].sum()) == 1  # a 1x1 level gives its only location
    # ATSS proper leaves this box without positives: the 512 px anchor of the 1x1 level drags the
    # candidates' std up, mean + std (0.64) exceeds every IoU (<= 0.5625)
    box = torch.tensor([[8.0, 8.0, 56.0, 56.0]])
    strict, _ = grounding.assign_atss(locations, strides, levels, box, ensure_positive=False)
    assert (strict == -1).all()
    rescued, _ = grounding.assign_atss(locations, strides, levels, box)
    assert locations[rescued >= 0].tolist() == [[28.0, 28.0]]  # the first of the four IoU-0.5625 anchors
    owner = torch.tensor([[-4.0, -4.0, 60.0, 60.0]])  # exactly the anchor of (28, 28): a positive of its own
    both, _ = grounding.assign_atss(locations, strides, levels, torch.cat([box, owner]))
    assert both[locations.tolist().index([28.0, 28.0])] == 1 and set(both[both >= 0].tolist()) == {1}  # never stolen
    matched, distances = grounding.assign_atss(locations, strides, levels, torch.zeros(0, 4))
    assert (matched == -1).all() and not distances.any()
    assigner = grounding.ATSSAssigner()
    out = assigner(locations, strides, levels, [{"boxes": torch.tensor([[8.0, 8.0, 56.0, 56.0]]),
                                                 "positive_map": torch.tensor([[False, True]])}], 3)
    positive = out["matched"][0] >= 0
    assert bool(positive.any()) and (out["token_targets"][0, positive] == torch.tensor([0.0, 1.0, 0.0])).all()
    with pytest.raises(ValueError, match="top_k"):
        grounding.ATSSAssigner(top_k=0)
    with pytest.raises(ValueError, match="'fcos' or 'atss'"):
        grounding.GroundingHead([8], text_dim=4, width=8, num_convs=0, assignment="retina")
