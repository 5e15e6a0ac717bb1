"""The per-task result table of a run's metrics."""

from vlfw.runner.report import results_table


def test_one_row_per_dataset_and_split_with_the_primary_metric_first():
    metrics = {"train/loss": 0.3, "val/vqa2/vqa_accuracy": 41.234, "val/vqa2/yes/no": 60.0,
               "val/nlvr2/accuracy": 55.0, "val/nlvr2/consistency": 20.0, "test/vqa2/vqa_accuracy": 40.0}
    lines = results_table(metrics, {"vqa2": "vqa_accuracy", "nlvr2": "accuracy"}).splitlines()
    assert lines[2:] == [
        "| vqa2 | val | vqa_accuracy | 41.23 | yes/no 60.00 |",
        "| vqa2 | test | vqa_accuracy | 40.00 |  |",
        "| nlvr2 | val | accuracy | 55.00 | consistency 20.00 |",
    ]


def test_no_evaluation_no_table():
    assert results_table({"train/loss": 1.0}) == ""
