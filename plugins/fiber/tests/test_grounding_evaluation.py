"""REC Acc@0.5 and grounding Recall@k (ANY-box) on predicted boxes."""

import pytest
import torch

from vlfw_fiber import grounding

GT = torch.tensor([0.0, 0.0, 10.0, 10.0])


def test_rec_accuracy_at_iou_half():
    predicted = torch.tensor([[0.0, 0.0, 10.0, 10.0],   # IoU 1
                              [0.0, 0.0, 10.0, 5.0],    # IoU 0.5 exactly: a hit
                              [0.0, 0.0, 10.0, 4.0],    # IoU 0.4
                              [20.0, 20.0, 30.0, 30.0]])  # IoU 0
    gt = GT.expand(4, 4)
    assert grounding.rec_hits(predicted, gt).tolist() == [True, True, False, False]
    assert grounding.rec_accuracy(predicted, gt) == pytest.approx(50.0)
    assert grounding.rec_accuracy(predicted, gt, iou_threshold=0.3) == pytest.approx(75.0)
    with pytest.raises(ValueError, match="3 ground-truth"):
        grounding.rec_hits(predicted, gt[:3])


def test_grounding_recall_any_box_protocol():
    miss = [50.0, 50.0, 60.0, 60.0]
    second_gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [40.0, 0.0, 60.0, 20.0]])
    ranked = [
        torch.tensor([[0.0, 0.0, 10.0, 10.0]] + [miss] * 9),            # found at rank 1
        torch.tensor([miss, miss, [41.0, 0.0, 60.0, 20.0]] + [miss] * 7),  # rank 3, on the SECOND gt box
        torch.tensor([miss] * 7 + [[0.0, 0.0, 10.0, 9.0]]),              # rank 8
        torch.tensor([miss] * 10),                                       # never
        torch.tensor([miss, [0.0, 0.0, 10.0, 10.0]]),                    # only 2 predictions: rank 2
    ]
    gts = [GT[None], second_gt, GT[None], GT[None], GT[None]]
    assert grounding.grounding_hits(ranked[1], second_gt) == (False, True, True)
    recall = grounding.grounding_recall(ranked, gts)
    assert recall == {"recall@1": pytest.approx(20.0), "recall@5": pytest.approx(60.0), "recall@10": pytest.approx(80.0)}
    with pytest.raises(ValueError, match="without ground-truth"):
        grounding.grounding_hits(ranked[0], torch.zeros(0, 4))


def test_record_metrics_on_predicted_boxes():
    rec = grounding.PredictedBoxRECAccuracy()
    batch = {"index": torch.tensor([0, 1, 2]), "gt_box": GT.expand(3, 4), "split": ["testA", "testA", "testB"]}
    pred = torch.tensor([[[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]],
                         [[50.0, 50.0, 60.0, 60.0], [0.0, 0.0, 10.0, 10.0]],  # the right box only at rank 2
                         [[1.0, 1.0, 10.0, 10.0], [0.0, 0.0, 0.0, 0.0]]])
    rec.update(batch, {"pred_boxes": pred})
    duplicate = {"index": torch.tensor([2]), "gt_box": GT[None], "split": ["testB"]}
    rec.update(duplicate, {"pred_boxes": pred[2:]})  # a distributed sampler's padded duplicate: counted once
    assert rec.compute() == {"acc@0.5": pytest.approx(200 / 3), "acc@0.5_testA": pytest.approx(50.0),
                             "acc@0.5_testB": pytest.approx(100.0)}

    recall = grounding.PredictedBoxGroundingRecall(ks=(1, 2))
    gt_boxes = torch.tensor([[[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 0.0, 0.0]], [[50.0, 50.0, 60.0, 60.0], [0.0, 0.0, 10.0, 10.0]],
                             [[30.0, 30.0, 40.0, 40.0], [0.0, 0.0, 0.0, 0.0]]])
    valid = torch.tensor([[True, True], [True, True], [True, False]])
    recall.update({"index": torch.tensor([0, 1, 2]), "gt_boxes": gt_boxes}, {"pred_boxes": pred, "pred_valid": valid})
    # sample 2: its padding row (0, 0, 0, 0) is not a prediction, and the zero gt row is padding
    assert recall.compute() == {"recall@1": pytest.approx(200 / 3), "recall@2": pytest.approx(200 / 3)}


def _toy_head_outputs(batch_size, num_tokens):
    torch.manual_seed(0)
    head = grounding.GroundingHead([8, 16], text_dim=12, width=32, num_convs=1, strides=(8, 16))
    maps = [torch.randn(batch_size, 8, 8, 8), torch.randn(batch_size, 16, 4, 4)]
    return head, maps, torch.randn(batch_size, num_tokens, 12)


def test_rec_batch_end_to_end_through_the_metric():
    cls, sep = 101, 102
    batch = {"index": torch.tensor([4, 7]), "input_ids": torch.tensor([[cls, 5, 6, sep], [cls, 9, sep, 0]]),
             "gt_box": torch.tensor([[8.0, 8.0, 40.0, 56.0], [20.0, 4.0, 60.0, 30.0]]), "split": ["val", "val"]}
    batch["attention_mask"] = batch["input_ids"] != 0
    head, maps, text = _toy_head_outputs(2, 4)
    outputs = head(maps, text, batch["attention_mask"])
    losses = head.loss(outputs, grounding.rec_targets(batch, [cls, sep]))
    assert set(losses) == {"token_focal", "box_giou", "centerness"} and all(bool(torch.isfinite(v)) for v in losses.values())
    expression = grounding.expression_token_mask(batch["input_ids"], batch["attention_mask"], [cls, sep])
    results = head.predict(outputs, [row[None] for row in expression], [[64, 64]] * 2, k=3)
    predicted = grounding.single_phrase_outputs(results)
    assert predicted["pred_boxes"].shape == (2, 3, 4)
    metric = grounding.PredictedBoxRECAccuracy()
    metric.update(batch, predicted)
    expected = grounding.rec_accuracy(predicted["pred_boxes"][:, 0], batch["gt_box"])
    assert metric.compute() == {"acc@0.5": pytest.approx(expected), "acc@0.5_val": pytest.approx(expected)}
    with pytest.raises(ValueError, match="one phrase per image"):
        grounding.single_phrase_outputs(head.predict(outputs, [torch.stack([row, row]) for row in expression], [[64, 64]] * 2))


def test_phrase_batch_end_to_end_through_the_metric():
    cls, sep = 101, 102
    input_ids = torch.tensor([[cls, 5, sep, 5, 6, sep], [cls, 7, 8, sep, 7, sep]])
    batch = {"index": torch.tensor([0, 1]), "input_ids": input_ids, "attention_mask": torch.ones_like(input_ids).bool(),
             "token_type_ids": torch.tensor([[0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 1, 1]]),
             "gt_boxes": torch.tensor([[[8.0, 8.0, 40.0, 56.0], [0.0, 0.0, 0.0, 0.0]],
                                       [[20.0, 4.0, 60.0, 30.0], [2.0, 2.0, 20.0, 20.0]]])}
    head, maps, text = _toy_head_outputs(2, 6)
    outputs = head(maps, text, batch["attention_mask"])
    targets = grounding.phrase_targets(batch, [cls, sep])
    assert sum(bool(v.requires_grad) for v in head.loss(outputs, targets).values()) == 3
    phrases = [t["positive_map"][:1] for t in targets]
    predicted = grounding.single_phrase_outputs(head.predict(outputs, phrases, [[64, 64]] * 2, k=10))
    metric = grounding.PredictedBoxGroundingRecall()
    metric.update(batch, predicted)
    rows = [predicted["pred_boxes"][i][predicted["pred_valid"][i]] for i in range(2)]
    expected = grounding.grounding_recall(rows, [t["boxes"] for t in targets])
    assert metric.compute() == pytest.approx(expected)
