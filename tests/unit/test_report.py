"""vlfw_report: run logs with hand-written values -> the comparison table, the plots, the errors."""

import json
from pathlib import Path

import pytest
from PIL import Image

from vlfw.cli.report import main
from vlfw.errors import DataError
from vlfw.reporting import comparison_table, load_run, unique_names


def write_run(directory: Path, records, metrics=None, config="model: late_fusion\ndatasets: [vqa2, nlvr2]\n",
              tail: str = "") -> Path:
    directory.mkdir(parents=True)
    text = "".join(json.dumps(r) + "\n" for r in records) + tail
    (directory / "train_log.jsonl").write_text(text)
    if metrics is not None:
        (directory / "metrics.json").write_text(json.dumps(metrics))
    if config is not None:
        (directory / "config.yaml").write_text(config)
    return directory


def train(update, vqa, nlvr2, lr):
    return {"update": update, "kind": "train", "train/vqa2/soft_bce": vqa, "train/vqa2/total_loss": vqa,
            "train/nlvr2/cross_entropy": nlvr2, "train/nlvr2/total_loss": nlvr2,
            "train/total_loss": vqa + nlvr2, "train/lr": lr, "train/grad_norm": 3.0,
            "train/samples_per_second": 100.0, "train/peak_memory_mb": 512.0, "train/skipped_updates": 0.0}


def val(update, vqa, nlvr2):
    return {"update": update, "kind": "val", "val/vqa2/vqa_accuracy": vqa, "val/nlvr2/accuracy": nlvr2}


RUN_A = [train(5, 2.0, 0.7, 1e-3), train(10, 1.5, 0.6, 5e-4), val(10, 20.5, 50.0),
         train(15, 1.25, 0.5, 2.5e-4), val(15, 30.25, 55.0),
         {"update": 15, "kind": "test", "test/vqa2/vqa_accuracy": 29.75, "test/nlvr2/accuracy": 54.5}]
RUN_B = [train(5, 2.5, 0.69, 1e-4), val(5, 11.0, 49.5), train(10, 2.25, 0.68, 1e-4), val(10, 12.5, 48.0)]


@pytest.fixture
def runs(tmp_path):
    a = write_run(tmp_path / "lr_high", RUN_A, metrics={"val/vqa2/vqa_accuracy": 30.25, "val/nlvr2/accuracy": 55.0,
                                                         "test/vqa2/vqa_accuracy": 29.75,
                                                         "test/nlvr2/accuracy": 54.5})
    b = write_run(tmp_path / "lr_low", RUN_B)  # no metrics.json: the log's last evaluation
    return a, b


def test_log_is_read_per_dataset(runs):
    run = load_run(runs[0])
    assert run.name == "lr_high" and run.model == "late_fusion" and run.last_update == 15
    assert run.datasets == ["vqa2", "nlvr2"]
    assert run.losses["vqa2"] == {"soft_bce": [(5, 2.0), (10, 1.5), (15, 1.25)],
                                  "total_loss": [(5, 2.0), (10, 1.5), (15, 1.25)]}
    assert run.losses["nlvr2"]["total_loss"] == [(5, 0.7), (10, 0.6), (15, 0.5)]
    assert set(run.losses["nlvr2"]) == {"cross_entropy", "total_loss"}  # lr, grad_norm ... are not losses
    assert run.lr == [(5, 1e-3), (10, 5e-4), (15, 2.5e-4)]
    assert run.evaluations["val"]["vqa2"]["vqa_accuracy"] == [(10, 20.5), (15, 30.25)]


def test_comparison_table_holds_exactly_the_logged_numbers(runs):
    table = comparison_table([load_run(d) for d in runs])
    assert table.splitlines() == [
        "| dataset | split | metric | lr_high | lr_low |",
        "|---|---|---|---|---|",
        "| vqa2 | val | vqa_accuracy | 30.25 | 12.50 |",
        "| vqa2 | test | vqa_accuracy | 29.75 | - |",
        "| nlvr2 | val | accuracy | 55.00 | 48.00 |",
        "| nlvr2 | test | accuracy | 54.50 | - |",
    ]


def test_several_runs_write_plots_and_comparison(runs, tmp_path, capsys):
    out = tmp_path / "report"
    assert main([str(runs[0]), str(runs[1]), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| vqa2 | val | vqa_accuracy | 30.25 | 12.50 |" in printed
    document = (out / "comparison.md").read_text()
    assert "| nlvr2 | val | accuracy | 55.00 | 48.00 |" in document
    assert "| lr_high | late_fusion | 15 |" in document
    expected = [out / n for n in ("comparison_loss.png", "comparison_metrics.png", "comparison_lr.png")]
    expected += [out / run / n for run in ("lr_high", "lr_low") for n in ("loss.png", "metrics.png", "lr.png")]
    for path in expected:
        with Image.open(path) as image:
            image.verify()  # a complete, valid PNG
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width > 300 and image.height > 200
            low, high = image.convert("L").getextrema()
            assert low < high  # something is drawn
    assert not list(runs[0].glob("*.png"))  # --out: the run directories are left alone


def test_one_run_plots_next_to_its_results(runs, capsys):
    assert main([str(runs[0])]) == 0
    assert sorted(p.name for p in runs[0].glob("*.png")) == ["loss.png", "lr.png", "metrics.png"]
    assert not (runs[0].parent / "comparison.md").exists()


def test_truncated_last_line_is_skipped(tmp_path, capsys):
    run_dir = write_run(tmp_path / "killed", RUN_A[:3], tail='{"update": 15, "kind": "train", "train/vqa2/to')
    run = load_run(run_dir)
    assert run.last_update == 10 and run.losses["vqa2"]["total_loss"] == [(5, 2.0), (10, 1.5)]
    assert any("incomplete last line 4" in note for note in run.notes)
    assert main([str(run_dir)]) == 0
    assert "incomplete last line 4" in capsys.readouterr().err
    assert (run_dir / "loss.png").is_file() and (run_dir / "metrics.png").is_file()


def test_corrupt_line_before_the_last_is_an_error(tmp_path):
    run_dir = write_run(tmp_path / "bad", [])
    (run_dir / "train_log.jsonl").write_text(json.dumps(RUN_A[0]) + "\n{oops\n" + json.dumps(RUN_A[1]) + "\n")
    with pytest.raises(DataError, match="line 2: not valid JSON"):
        load_run(run_dir)


def test_run_without_evaluation_gets_loss_and_lr_plots(tmp_path, capsys):
    run_dir = write_run(tmp_path / "early", RUN_A[:2], config=None)
    assert main([str(run_dir)]) == 0
    captured = capsys.readouterr()
    assert "No evaluation metrics yet in early." in captured.out
    assert "no evaluation yet" in captured.err
    assert sorted(p.name for p in run_dir.glob("*.png")) == ["loss.png", "lr.png"]


@pytest.mark.parametrize("make, message", [
    (lambda root: root / "missing", "run directory .*missing does not exist"),
    (lambda root: root, "has no train_log.jsonl"),
    (lambda root: write_run(root / "empty", []), "holds no log records yet"),
])
def test_bad_run_directories_are_one_line_errors(tmp_path, capsys, make, message):
    import re

    assert main([str(make(tmp_path))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("vlfw_report: error: ") and re.search(message, err[0])
    assert "Traceback" not in "\n".join(err)


def test_same_folder_names_get_their_parents():
    assert unique_names(["/x/a/run", "/x/b/run"]) == ["a/run", "b/run"]
    assert unique_names(["/x/one", "/x/two"]) == ["one", "two"]
