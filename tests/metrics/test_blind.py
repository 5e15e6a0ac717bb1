"""Blind levels (vlfw.metrics.blind) on hand-made records with known answers, and the column the
results table gives them."""

import torch

from vlfw.metrics.blind import blind_level
from vlfw.runner.report import results_table


class FakeBuilder:
    name = "fake"

    def __init__(self, records=None, samples=None):
        self._records = records or {}
        self._samples = samples or {}

    def records(self, split):
        return self._records[split]

    def build(self, split):
        return self._samples[split]


def test_vqa_prior_is_the_most_frequent_answer_of_the_question_type():
    ten = lambda answer: [answer] * 10  # noqa: E731
    train = [{"question": "what color is the circle?", "question_type": "what color is", "answers": ten("red")},
             {"question": "what color is the cube?", "question_type": "what color is", "answers": ten("red")},
             {"question": "what color is it?", "question_type": "what color is", "answers": ten("blue")},
             {"question": "how many circles?", "question_type": "how many", "answers": ten("2")}]
    # red: 1.0; blue: 0.0; "how many" -> "2": 3 of 10 humans say 2 -> accuracy 0.9 (official 10-choose-9 mean:
    # leaving out one of the three "2" answers leaves 2 matches -> 2/3, else 3 matches -> 1: (3 * 2/3 + 7) / 10)
    val = [{"question": "what color is the star?", "question_type": "what color is", "answers": ten("red")},
           {"question": "what color is the star?", "question_type": "what color is", "answers": ten("blue")},
           {"question": "how many stars?", "question_type": "how many", "answers": ["2"] * 3 + ["3"] * 7}]
    level = blind_level(FakeBuilder({"train": train, "val": val}), "vqa", "val")
    assert level == round(100 * (1.0 + 0.0 + 0.9) / 3, 2)


def test_majority_label_and_random_candidate():
    records = {"train": [{"label": 0}, {"label": 1}, {"label": 1}], "val": [{"label": 1}, {"label": 0}, {"label": 0},
                                                                             {"label": 0}]}
    assert blind_level(FakeBuilder(records), "nlvr2", "val") == 25.0
    assert blind_level(FakeBuilder(records), "classification", "val") == 25.0
    gt = torch.tensor([0.0, 0.0, 10.0, 10.0])
    boxes_a = torch.tensor([[0.0, 0.0, 10.0, 10.0], [50, 50, 60, 60], [20, 20, 30, 30], [0, 0, 10, 5]])  # IoU 1, 0, 0, .5
    boxes_b = torch.tensor([[0.0, 0.0, 10.0, 10.0], [40, 40, 50, 50]])
    samples = {"val": [{"region_boxes": boxes_a, "gt_box": gt}, {"region_boxes": boxes_b, "gt_box": gt}]}
    # sample a: 2 of 4 candidates reach IoU >= 0.5 (the half box is exactly 0.5); b: 1 of 2
    assert blind_level(FakeBuilder(samples=samples), "rec", "val") == 50.0
    assert blind_level(FakeBuilder(), "captioning", "val") is None


def test_results_table_shows_the_blind_column():
    metrics = {"val/vqa2/vqa_accuracy": 61.5, "val/nlvr2/accuracy": 70.0}
    table = results_table(metrics, {"vqa2": "vqa_accuracy", "nlvr2": "accuracy"}, {("vqa2", "val"): 35.2})
    assert "| blind level |" in table and "| vqa2 | val | vqa_accuracy | 61.50 | 35.20 |" in table
    assert "| nlvr2 | val | accuracy | 70.00 | - |" in table
    assert "blind" not in results_table(metrics)
