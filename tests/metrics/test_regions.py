import pytest
import torch

from vlfw.data.batch import Batch
from vlfw.registry import METRICS


def test_rec_accuracy_masks_padding_and_reports_splits(check_two_ranks):
    boxes = torch.tensor([
        [[0, 0, 10, 10], [50, 50, 60, 60], [0, 0, 0, 0]],
        [[0, 0, 10, 10], [50, 50, 60, 60], [0, 0, 10, 10]],
        [[0, 0, 10, 10], [0, 0, 10, 5], [0, 0, 0, 0]],
        [[0, 0, 10, 10], [0, 0, 10, 4], [0, 0, 0, 0]],
    ], dtype=torch.float)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 1, 0], [1, 1, 0]], dtype=torch.bool)
    # sample 0's best logit is on a padded region: it must be ignored (-> region 1, a miss)
    logits = torch.tensor([[0.0, 1.0, 5.0], [0.0, 1.0, 5.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    gt = torch.tensor([[50, 50, 60, 60], [0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]], dtype=torch.float)
    batch = Batch(index=torch.arange(4), region_boxes=boxes, region_mask=mask, gt_box=gt,
                  split=["testA", "testA", "testB", "testB"])
    result = check_two_ranks(lambda: METRICS.build("rec_accuracy"), batch, {"region_logits": logits})
    # hits: 0 yes (region 1 == gt), 1 yes (region 2), 2 IoU 0.5 yes, 3 IoU 0.4 no
    assert result == {"acc@0.5": 75.0, "acc@0.5_testA": 100.0, "acc@0.5_testB": 50.0}


def test_vcr_accuracy(check_two_ranks):
    answer = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 3]), 4).float()
    rationale = torch.nn.functional.one_hot(torch.tensor([0, 0, 2, 1]), 4).float()
    batch = Batch(index=torch.arange(4), answer_label=torch.tensor([0, 1, 0, 3]),
                  rationale_label=torch.tensor([0, 1, 2, 1]))
    result = check_two_ranks(lambda: METRICS.build("vcr_accuracy"), batch,
                             {"answer_logits": answer, "rationale_logits": rationale})
    assert result == {"q2a": 75.0, "qa2r": 75.0, "q2ar": 50.0}


def test_grounding_recall_any_box(check_two_ranks):
    torch.manual_seed(0)
    n_regions = 12
    boxes = torch.stack([torch.tensor([10.0 * i, 0.0, 10.0 * i + 10, 10.0]) for i in range(n_regions)])
    region_boxes = boxes.expand(3, -1, -1).clone()
    mask = torch.ones(3, n_regions, dtype=torch.bool)
    mask[2, 10:] = False
    order = torch.arange(n_regions, 0, -1).float()  # region 0 ranked first, then 1, 2, ...
    logits = order.expand(3, -1).clone()
    logits[2, 10:] = 100.0  # padded: never ranked
    gt = [
        torch.tensor([[0.0, 0.0, 10.0, 10.0]]),                              # region 0: rank 1
        torch.tensor([[200.0, 0, 210, 10], [30.0, 0.0, 40.0, 10.0]]),        # any box: region 3, rank 4
        torch.tensor([[110.0, 0.0, 120.0, 10.0], [70.0, 0.0, 80.0, 10.0]]),  # region 11 padded; region 7 rank 8
    ]
    batch = Batch(index=torch.arange(3), region_boxes=region_boxes, region_mask=mask, gt_boxes=gt)
    result = check_two_ranks(lambda: METRICS.build("grounding_recall"), batch, {"region_logits": logits})
    assert result == {"recall@1": pytest.approx(100 / 3), "recall@5": pytest.approx(200 / 3), "recall@10": 100.0}

    padded = torch.zeros(3, 2, 4)
    gt_mask = torch.zeros(3, 2, dtype=torch.bool)
    for i, g in enumerate(gt):
        padded[i, : len(g)] = g
        gt_mask[i, : len(g)] = True
    tensor_batch = Batch(index=torch.arange(3), region_boxes=region_boxes, region_mask=mask, gt_boxes=padded,
                         gt_boxes_mask=gt_mask)
    metric = METRICS.build("grounding_recall")
    metric.update(tensor_batch, {"region_logits": logits})
    assert metric.compute() == result
