"""The real command line on the real components (late_fusion on Shapes tiny VQA v2):
kill -9 and resume is bit-identical, torchrun with 2 CPU processes matches 1 process, and bad
input is one clear line."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vlfw.testing import free_port

ROOT = Path(__file__).resolve().parents[2]
TINY = [f"config={ROOT / 'projects' / 'baselines' / 'shapes_vqa2.yaml'}", "dataset_config.vqa2.shapes.size=tiny",
        "training.batch_size=8", "training.progress_bar=false", "training.log_every=5",
        "model_config.late_fusion.hidden_size=32", "model_config.late_fusion.cnn_channels=[8,16,16]",
        "model_config.late_fusion.text_layers=1"]


def vlfw_run(*args, timeout=300, **kwargs):
    return subprocess.run([sys.executable, "-m", "vlfw.cli.run", *TINY, *args], capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def assert_same_run(a: Path, b: Path, last_update: int) -> None:
    """Two runs ended identically: metrics.json bytes, best weights, and the last checkpoint's
    weights and data position."""
    assert (a / "metrics.json").read_bytes() == (b / "metrics.json").read_bytes()
    best_a, best_b = load_file(a / "best_model.safetensors"), load_file(b / "best_model.safetensors")
    assert best_a.keys() == best_b.keys() and all(torch.equal(best_a[k], best_b[k]) for k in best_a)
    last_a = torch.load(a / "checkpoints" / f"update_{last_update}.pt", weights_only=True)
    last_b = torch.load(b / "checkpoints" / f"update_{last_update}.pt", weights_only=True)
    assert last_a["model"].keys() == last_b["model"].keys()
    assert all(torch.equal(last_a["model"][k], last_b["model"][k]) for k in last_a["model"])
    assert last_a["data"] == last_b["data"]


MULTITASK = ["datasets=vqa2,snli_ve,nlvr2,refcoco", "dataset_config.snli_ve.source=shapes",
             "dataset_config.nlvr2.source=shapes", "dataset_config.refcoco.source=shapes",
             "multitask.iteration_strategy=temperature_scaled", "evaluation.metric=mean"]


@pytest.mark.parametrize("extra", [[], MULTITASK], ids=["single_task", "multi_task"])
def test_kill_and_resume_from_the_command_line(tmp_path, shapes_tiny_root, extra):
    args = ["training.max_updates=40", "training.checkpoint_every=5", "training.eval_every=20",
            "checkpoint.keep_last=20", "run_type=train_val_test", *extra]
    straight = vlfw_run(*args, f"save_dir={tmp_path / 'straight'}")
    assert straight.returncode == 0, straight.stderr[-2000:]

    killed_dir = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "vlfw.cli.run", *TINY, *args, f"save_dir={killed_dir}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pointer = killed_dir / "checkpoints" / "last"
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        if pointer.is_file() and pointer.read_text().strip() in ("update_10.pt", "update_15.pt", "update_25.pt"):
            break
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (killed_dir / "metrics.json").exists() or "test/" not in (killed_dir / "metrics.json").read_text()

    resumed = vlfw_run(*args, f"save_dir={killed_dir}", "checkpoint.resume=true")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_run(tmp_path / "straight", killed_dir, 40)


def test_one_dataset_multitask_config_equals_the_single_task_run(tmp_path, shapes_tiny_root):
    """Every multi-task option set for a one-dataset run changes nothing: same weights, same metrics."""
    args = ["training.max_updates=12", "training.checkpoint_every=6", "training.eval_every=6", "run_type=train_val_test"]
    single = vlfw_run(*args, f"save_dir={tmp_path / 'single'}")
    multi = vlfw_run(*args, f"save_dir={tmp_path / 'multi'}", "datasets=[vqa2]",
                     "multitask.iteration_strategy=temperature_scaled", "multitask.temperature=3.0",
                     "multitask.mode=all_per_update", "multitask.batch_sizes={vqa2: 8}",
                     "multitask.loss_weights={vqa2: 1.0}", "evaluation.metric=mean")
    assert single.returncode == 0 and multi.returncode == 0, (single.stderr + multi.stderr)[-2000:]
    assert_same_run(tmp_path / "single", tmp_path / "multi", 12)
    table = (tmp_path / "multi" / "results.md").read_text()
    assert "| vqa2 | val | vqa_accuracy |" in table and "| vqa2 | test | vqa_accuracy |" in table


def test_torchrun_two_processes_match_one(tmp_path, shapes_tiny_root):
    # dropout off: per-rank dropout masks are the one thing that legitimately differs; SGD, not
    # Adam, whose m/sqrt(v) turns float-rounding noise in near-zero gradients into full steps
    args = ["training.max_updates=2", "training.eval_every=2", "training.checkpoint_every=2",
            "run_type=train_val", "model_config.late_fusion.dropout=0.0", "optimizer.type=sgd",
            "optimizer.lr=0.05", "scheduler.type=constant"]
    single = vlfw_run(*args, f"save_dir={tmp_path / 'one'}")
    assert single.returncode == 0, single.stderr[-2000:]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    port = free_port()
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
               f"--master_port={port}", "-m", "vlfw.cli.run", *TINY, *args, f"save_dir={tmp_path / 'two'}"]
    # a session of its own, so that a hang kills the ranks too, not only the launcher
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               start_new_session=True)
    try:
        _, stderr = process.communicate(timeout=400)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail("torchrun did not finish in time")
    assert process.returncode == 0, stderr[-3000:]
    one = torch.load(tmp_path / "one" / "checkpoints" / "update_2.pt", weights_only=True)["model"]
    two = torch.load(tmp_path / "two" / "checkpoints" / "update_2.pt", weights_only=True)["model"]
    for key in one:
        assert torch.allclose(one[key], two[key], atol=1e-5, rtol=1e-4), key
    metrics_one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    metrics_two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert metrics_one.keys() == metrics_two.keys()
    for key in metrics_one:
        assert metrics_one[key] == pytest.approx(metrics_two[key], abs=0.5), key


@pytest.mark.parametrize("args, expected", [
    (["training.max_update=3"], "unknown config key 'training.max_update'"),
    (["model=late_fusin"], "unknown model 'late_fusin'"),
    (["dataset_config.vqa2.source=files"], "data_dir"),
])
def test_bad_input_is_one_line(args, expected, tmp_path):
    result = vlfw_run(*args, f"save_dir={tmp_path}")
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_corrupt_checkpoint_on_resume_is_named_and_left_alone(tmp_path, shapes_tiny_root):
    args = ["training.max_updates=4", "training.checkpoint_every=2", "training.eval_every=4", "run_type=train",
            f"save_dir={tmp_path}"]
    assert vlfw_run(*args).returncode == 0
    last = tmp_path / "checkpoints" / "update_4.pt"
    last.write_bytes(last.read_bytes()[:1000])
    before = sorted((p.name, p.stat().st_size) for p in (tmp_path / "checkpoints").iterdir())
    result = vlfw_run(*args, "checkpoint.resume=true", "training.max_updates=6")
    assert result.returncode == 2
    assert "update_4.pt" in result.stderr and "Traceback" not in result.stderr
    assert sorted((p.name, p.stat().st_size) for p in (tmp_path / "checkpoints").iterdir()) == before


def test_first_run_that_generates_the_world_trains_like_a_cached_one(tmp_path):
    """Generating the Shapes world on first use must not shift the global RNG (model init)."""
    env = dict(os.environ, VLFW_CACHE=str(tmp_path / "fresh-cache"))
    args = ["training.max_updates=2", "training.checkpoint_every=2", "run_type=train"]
    first = vlfw_run(*args, f"save_dir={tmp_path / 'first'}", env=env)
    second = vlfw_run(*args, f"save_dir={tmp_path / 'second'}", env=env)
    assert first.returncode == 0 and second.returncode == 0, first.stderr[-2000:] + second.stderr[-2000:]
    assert "generating the Shapes world" in first.stderr and "generating" not in second.stderr
    a = torch.load(tmp_path / "first" / "checkpoints" / "update_2.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "second" / "checkpoints" / "update_2.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
