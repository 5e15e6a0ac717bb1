"""vlfw_score on the hand-written fixtures."""

from __future__ import annotations

import json

from dataset_helpers import native

from vlfw.cli.score import main


def test_vqa2_score(tmp_path, capsys):
    native.write_vqa2(str(tmp_path))
    results = tmp_path / "results.json"
    # val question 3000: humans said red x2, blue x8 -> "red" scores 0.6 (not all answers equal)
    results.write_text(json.dumps([{"question_id": 3000, "answer": "red"}]))
    assert main(["vqa2", "--data-dir", str(tmp_path), "--split", "val2014", "--predictions", str(results)]) == 0
    out = capsys.readouterr().out
    scores = json.loads(out.strip().splitlines()[-1])
    assert scores["vqa_accuracy"] == 60.0 and scores["benchmark"] == "vqa2"
    assert "vqa_accuracy" in out.splitlines()[1]


def test_vqa2_score_errors(tmp_path, capsys):
    native.write_vqa2(str(tmp_path))
    results = tmp_path / "results.json"
    results.write_text('[{"question_id": 3000, "ans')
    assert main(["vqa2", "--data-dir", str(tmp_path), "--split", "val2014", "--predictions", str(results)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("vlfw_score: error: ") and "results.json: not valid JSON" in err[0]
    assert main(["vqa2", "--data-dir", str(tmp_path), "--split", "val2014", "--predictions", str(tmp_path / "none.json")]) == 2
    assert "predictions file not found" in capsys.readouterr().err
    assert main(["vqa2", "--data-dir", str(tmp_path), "--split", "test-dev2015", "--predictions", str(results)]) == 2
    assert "annotations" in capsys.readouterr().err


def test_nlvr2_score(tmp_path, capsys):
    native.write_nlvr2(str(tmp_path))
    predictions = tmp_path / "pred.csv"
    # dev-5-1-0 True (right), dev-5-1-1 True (wrong), dev-6-0-0 True (right)
    predictions.write_text("dev-5-1-0,True\ndev-5-1-1,True\ndev-6-0-0,True\n")
    assert main(["nlvr2", "--data-dir", str(tmp_path), "--split", "dev", "--predictions", str(predictions)]) == 0
    scores = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert scores["accuracy"] == round(200 / 3, 2)
    # sentences (pair id blanked): dev-5-0 {dev-5-1-0 right}, dev-5-1 {dev-5-1-1 wrong}, dev-6-0 {right}
    assert scores["consistency"] == round(200 / 3, 2)
    predictions.write_text("dev-5-1-0,True\n")
    assert main(["nlvr2", "--data-dir", str(tmp_path), "--split", "dev", "--predictions", str(predictions)]) == 2
    assert "2 missing" in capsys.readouterr().err
    predictions.write_text("dev-5-1-0,yes\n")
    assert main(["nlvr2", "--data-dir", str(tmp_path), "--split", "dev", "--predictions", str(predictions)]) == 2
    assert "line 1" in capsys.readouterr().err
