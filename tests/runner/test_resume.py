"""THE key property: a run killed with SIGKILL and resumed ends bit-for-bit like an uninterrupted one."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from runner_helpers import TOYS, run_script, script_env

COMMON = ["training.max_updates=12", "training.checkpoint_every=3", "training.eval_every=4",
          "checkpoint.keep_last=10"]


def launch_and_kill(save_dir, overrides, kill_after="update_6.pt", timeout=90):
    process = subprocess.Popen([sys.executable, str(TOYS), str(save_dir), *overrides], env=script_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pointer = save_dir / "checkpoints" / "last"
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            if pointer.is_file() and pointer.read_text().strip() == kill_after:
                break
            assert process.poll() is None, "the run ended before it could be killed"
            time.sleep(0.01)
        else:
            pytest.fail("no checkpoint appeared in time")
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
    assert process.returncode == -signal.SIGKILL
    assert not (save_dir / "checkpoints" / "update_12.pt").exists(), "killed too late to test anything"


def final_state(save_dir):
    return torch.load(save_dir / "checkpoints" / "update_12.pt", weights_only=True)


def assert_same_run(a, b):
    state_a, state_b = final_state(a), final_state(b)
    assert state_a["model"].keys() == state_b["model"].keys()
    for key in state_a["model"]:
        assert torch.equal(state_a["model"][key], state_b["model"][key]), key
    for key, value in state_a["optimizer"]["state"].items():
        for name, tensor in value.items():
            assert torch.equal(tensor, state_b["optimizer"]["state"][key][name]), (key, name)
    assert state_a["counters"] == state_b["counters"]
    assert _same(state_a["hooks"], state_b["hooks"])
    assert (a / "metrics.json").read_bytes() == (b / "metrics.json").read_bytes()
    assert (a / "best_model.safetensors").read_bytes() == (b / "best_model.safetensors").read_bytes()
    assert (a / "predictions" / "toy_dataset_test.json").read_bytes() == \
        (b / "predictions" / "toy_dataset_test.json").read_bytes()


@pytest.mark.parametrize("workers", [0, 2])
def test_kill_and_resume_is_bit_identical(tmp_path, workers):
    overrides = COMMON + [f"training.num_workers={workers}", "training.callbacks=[{type: toy_sleep, params: {seconds: 0.15}}]"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    run_script(straight, *overrides)
    launch_and_kill(killed, overrides)
    run_script(killed, *overrides, "checkpoint.resume=true")
    assert_same_run(straight, killed)
    # the resumed run's log has each update once, and the train lines continue where it stopped
    import json

    updates = [json.loads(line)["update"] for line in (killed / "train_log.jsonl").read_text().splitlines()
               if json.loads(line)["kind"] == "train"]
    assert updates == sorted(set(updates)) and updates[-1] == 12


def _same(a, b) -> bool:
    """Nested equality where tensors compare by value."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b
