"""The loop's hooks and the update step: hook states resume (EMA, the log window, a user hook),
the EMA is what evaluation and the export see, the non-finite policy covers gradients and gives
up, non-finite weights are never written, and a save_dir never mixes two runs."""

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vlfw.errors import CheckpointError, VlfwError
from vlfw.runner import run

COMMON = {"training.max_updates": 12, "training.checkpoint_every": 6, "training.eval_every": 6,
          "checkpoint.keep_last": 10, "training.callbacks": "[toy_counter]"}


def checkpoint(save_dir, name):
    return torch.load(Path(save_dir) / "checkpoints" / name, weights_only=True)


def log_lines(save_dir, kind="train"):
    lines = [json.loads(line) for line in (Path(save_dir) / "train_log.jsonl").read_text().splitlines()]
    return [line for line in lines if line["kind"] == kind]


def same_tensors(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def straight_and_resumed(tmp_path, **overrides):
    """A 12-update run, and one resumed from its update-6 checkpoint in another save_dir."""
    import runner_toys

    options = {**COMMON, **overrides}
    straight = runner_toys.make_config(tmp_path / "straight", **options)
    run(straight)
    resumed = runner_toys.make_config(tmp_path / "resumed", **options, **{
        "checkpoint.resume_file": str(tmp_path / "straight" / "checkpoints" / "update_6.pt")})
    run(resumed)
    return Path(straight.save_dir), Path(resumed.save_dir)


def test_hook_states_resume_exactly(tmp_path):
    """log_every=4 with a checkpoint at 6: the window 5..8 straddles the resume point; the EMA and a
    user hook's count continue; the weights, the log lines and the EMA export are the straight run's."""
    straight, resumed = straight_and_resumed(tmp_path, **{"training.log_every": 4, "training.ema.decay": 0.8})
    assert same_tensors(checkpoint(straight, "update_12.pt")["model"], checkpoint(resumed, "update_12.pt")["model"])
    assert same_tensors(load_file(straight / "best_model.safetensors"), load_file(resumed / "best_model.safetensors"))
    straight_lines = {line["update"]: line for line in log_lines(straight)}
    resumed_lines = {line["update"]: line for line in log_lines(resumed)}
    assert sorted(resumed_lines) == [8, 12]
    for update in (8, 12):
        keys = [k for k in straight_lines[update] if k.startswith("train/") and "second" not in k and "memory" not in k]
        assert {k: straight_lines[update][k] for k in keys} == {k: resumed_lines[update][k] for k in keys}, update
    hooks = checkpoint(resumed, "update_12.pt")["hooks"]
    assert hooks["toy_counter"] == {"count": 12}  # 6 restored + 6 counted
    assert hooks["ema"]["updates"] == 12
    shadow = hooks["ema"]["shadow"]
    exported = load_file(resumed / "best_model.safetensors")
    best = checkpoint(resumed, "best.pt")
    if best["counters"]["update"] == 12:  # the export is the best checkpoint's weights: the EMA of then
        assert all(torch.equal(exported[k], shadow[k]) for k in shadow)


def test_ema_is_what_evaluation_and_the_best_checkpoint_see(tmp_path):
    import runner_toys

    config = runner_toys.make_config(tmp_path / "ema", **{**COMMON, "training.ema.decay": 0.5,
                                                            "training.eval_every": 12})
    run(config)
    state = checkpoint(config.save_dir, "update_12.pt")
    shadow, raw = state["hooks"]["ema"]["shadow"], state["model"]
    assert not same_tensors({k: raw[k] for k in shadow}, shadow)  # the average is not the weights
    best = checkpoint(config.save_dir, "best.pt")
    assert best["counters"]["update"] == 12
    assert all(torch.equal(best["model"][k], shadow[k]) for k in shadow if shadow[k].is_floating_point())
    assert same_tensors(load_file(Path(config.save_dir) / "best_model.safetensors"), best["model"])


def test_a_nan_gradient_from_a_finite_loss_never_reaches_the_weights(toy_config):
    config = toy_config(**{"run_type": "train", "model_config.toy_model.nan_gradient_at": 3})
    with pytest.raises(VlfwError, match=r"gradient norm at update 3 \(the loss was finite\)"):
        run(config)
    import runner_toys

    skip = runner_toys.make_config(Path(config.save_dir).parent / "skip", **{
        "run_type": "train", "model_config.toy_model.nan_gradient_at": 3, "training.nan_policy": "skip"})
    run(skip)
    state = checkpoint(skip.save_dir, (Path(skip.save_dir) / "checkpoints" / "last").read_text().strip())
    assert state["step"]["skipped_updates"] == 1
    assert all(bool(torch.isfinite(v).all()) for v in state["model"].values() if v.is_floating_point())


def test_skipping_gives_up(toy_config):
    nan = {"run_type": "train", "dataset_config.toy_dataset.nan_index": 5, "training.nan_policy": "skip"}
    with pytest.raises(VlfwError, match=r"consecutive updates skipped"):
        run(toy_config(**nan, **{"training.max_consecutive_skips": 0}))
    import runner_toys

    fraction = runner_toys.make_config(Path(toy_config().save_dir).parent / "fraction", **nan, **{
        "training.max_consecutive_skips": 1, "training.max_skipped_fraction": 0.0})
    with pytest.raises(VlfwError, match=r"2 of \d+ updates skipped"):
        run(fraction)


def test_non_finite_weights_are_never_written(toy_config):
    # plain SGD with an lr near the float32 maximum: the first step's weights overflow to Inf
    config = toy_config(**{"run_type": "train", "optimizer.type": "sgd", "optimizer.momentum": 0.0,
                           "optimizer.lr": 3.0e38, "training.clip_grad_norm": "null",
                           "training.checkpoint_every": 1, "optimizer.weight_decay": 0.0,
                           "multitask.loss_weights.toy_dataset": 1.0e6})  # gradients large enough to overflow
    with pytest.raises(CheckpointError, match="NaN or Inf at update 1"):
        run(config)
    folder = Path(config.save_dir) / "checkpoints"
    assert not (folder / "last").exists() and not list(folder.glob("update_*.pt"))


def test_a_save_dir_holding_a_run_is_refused_unless_resumed(toy_config):
    config = toy_config(**{"run_type": "train_test"})
    run(config)
    lines = len((Path(config.save_dir) / "train_log.jsonl").read_text().splitlines())
    again = toy_config(**{"run_type": "train_test", "seed": 4})
    with pytest.raises(CheckpointError, match="already holds a run"):
        run(again)
    assert len((Path(config.save_dir) / "train_log.jsonl").read_text().splitlines()) == lines  # nothing mixed in
    auto = toy_config(**{"run_type": "train_test", "checkpoint.resume": "auto"})
    metrics = run(auto)  # the finished run is continued: nothing left to train, its test again
    assert "test/toy_dataset/accuracy" in metrics


def test_resume_auto_starts_fresh_in_an_empty_save_dir_and_removes_dead_temporaries(toy_config):
    config = toy_config(**{"run_type": "train", "checkpoint.resume": "auto"})
    folder = Path(config.save_dir) / "checkpoints"
    folder.mkdir(parents=True)
    dead = folder / ".update_3.pt.tmp.2147483646"  # a writer that died (no such process)
    dead.write_bytes(b"partial")
    live = folder / f".update_999.pt.tmp.{os.getpid()}"  # this process: alive
    live.write_bytes(b"in progress")
    run(config)
    assert not dead.exists() and live.exists()
    assert (folder / "last").read_text().strip() == "update_12.pt"


def test_a_checkpoint_of_another_run_is_one_line_before_anything_is_written(toy_config, tmp_path):
    import runner_toys

    first = runner_toys.make_config(tmp_path / "first", **{"run_type": "train"})
    run(first)
    other = runner_toys.make_config(tmp_path / "other", **{
        "run_type": "train", "datasets": "[toy_dataset_b]",
        "checkpoint.resume_file": str(tmp_path / "first" / "checkpoints" / "update_12.pt")})
    with pytest.raises(CheckpointError, match=r"checkpoint of model 'toy_model' on datasets \['toy_dataset'\]"):
        run(other)
    assert not (tmp_path / "other" / "config.yaml").exists()


@pytest.mark.parametrize("run_type", ["train", "val", "test"])
def test_resume_in_the_save_dir_of_another_run_is_one_line_and_writes_nothing(toy_config, run_type):
    run(toy_config(**{"run_type": "train", "training.max_updates": 3}))
    save_dir = Path(toy_config().save_dir)
    before = {p.relative_to(save_dir): p.read_bytes() for p in sorted(save_dir.rglob("*")) if p.is_file()}
    other = toy_config(**{"run_type": run_type, "datasets": "[toy_dataset_b]", "checkpoint.resume": True})
    with pytest.raises(CheckpointError, match=r"it is a checkpoint of model 'toy_model' on datasets \['toy_dataset'\], "
                                              r"this run is model 'toy_model' on \['toy_dataset_b'\]$") as info:
        run(other)
    assert "\n" not in str(info.value)
    after = {p.relative_to(save_dir): p.read_bytes() for p in sorted(save_dir.rglob("*")) if p.is_file()}
    assert after == before  # config.yaml of the first run included


def test_evaluating_a_checkpoint_that_does_not_fit_the_model_is_one_line(toy_config, tmp_path):
    import runner_toys

    first = runner_toys.make_config(tmp_path / "first", **{"run_type": "train", "training.max_updates": 3})
    run(first)
    path = tmp_path / "first" / "checkpoints" / "update_3.pt"
    other = runner_toys.make_config(tmp_path / "other", **{"run_type": "val", "datasets": "[toy_dataset_b]",
                                                           "checkpoint.resume_file": str(path)})
    with pytest.raises(CheckpointError) as info:
        run(other)
    assert str(info.value).startswith(
        f"the weights of {path} do not fit this run's model (it is a checkpoint of model 'toy_model' on datasets "
        "['toy_dataset']): missing: toy_heads.toy_dataset_b.weight, toy_heads.toy_dataset_b.bias; unexpected: "
        "toy_heads.toy_dataset.weight, toy_heads.toy_dataset.bias;")
    assert not (tmp_path / "other").exists()


def test_a_run_resumed_after_it_stopped_early_trains_no_further(toy_config):
    options = {"run_type": "train_val", "training.max_updates": 20, "training.eval_every": 2,
               "training.checkpoint_every": 100, "training.early_stopping.patience": 2,
               "dataset_config.toy_dataset.metrics": [{"type": "toy_scripted", "params": {"values": [0.1, 0.5, 0.3]}}]}
    config = toy_config(**options)
    run(config)
    folder = Path(config.save_dir) / "checkpoints"
    assert (folder / "last").read_text().strip() == "update_8.pt"
    run(toy_config(**options, **{"checkpoint.resume": True}))  # e.g. a requeued job
    assert (folder / "last").read_text().strip() == "update_8.pt"
    assert sorted(p.name for p in folder.glob("update_*.pt")) == ["update_8.pt"]
    assert max(line["update"] for line in log_lines(config.save_dir)) == 8
