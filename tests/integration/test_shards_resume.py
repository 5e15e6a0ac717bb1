"""VL-BERT pre-training from webdataset shards through the real command line: it trains, and a
run killed with SIGKILL and resumed ends bit-for-bit like an uninterrupted one."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vlfw.cli.prepare import main as prepare

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "projects" / "vlbert" / "configs" / "shapes" / "pretrain_cc3m.yaml"
UPDATES = 12


@pytest.fixture(scope="module")
def shards(tmp_path_factory, shapes_tiny_root):
    out = tmp_path_factory.mktemp("shards")
    assert prepare(["shards", "--source", "shapes", "--out", str(out), "--samples-per-shard", "4"]) == 0
    return out / "train"


def command(shards, save_dir, *extra):
    return [sys.executable, "-m", "vlfw.cli.run", f"config={RECIPE}", f"dataset_config.cc3m.shards={shards}",
            "dataset_config.cc3m.shard_shuffle_buffer=3", "training.batch_size=4", "training.num_workers=2",
            f"training.max_updates={UPDATES}", "training.checkpoint_every=3", "checkpoint.keep_last=20",
            "training.log_every=1", "training.progress_bar=false", f"save_dir={save_dir}", *extra]


def test_pretraining_on_shards_resumes_bit_identically_after_sigkill(tmp_path, shards):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    straight = subprocess.run(command(shards, tmp_path / "straight"), capture_output=True, text=True, env=env,
                              timeout=240)
    assert straight.returncode == 0, straight.stderr[-3000:]
    lines = [json.loads(line) for line in (tmp_path / "straight" / "train_log.jsonl").read_text().splitlines()]
    train = [line for line in lines if line["kind"] == "train"]
    assert [line["update"] for line in train] == list(range(1, UPDATES + 1))
    assert all(math.isfinite(line["train/cc3m/mlm"]) and math.isfinite(line["train/cc3m/mrc"]) for line in train)

    killed = tmp_path / "killed"
    process = subprocess.Popen(command(shards, killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    pointer = killed / "checkpoints" / "last"
    deadline = time.time() + 240
    try:
        while time.time() < deadline and process.poll() is None:
            # a mid-epoch checkpoint (an epoch is 2 workers x 2 batches of 4 on the 15 tiny samples)
            if pointer.is_file() and pointer.read_text().strip() in ("update_3.pt", "update_6.pt", "update_9.pt"):
                break
            time.sleep(0.002)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (killed / "checkpoints" / f"update_{UPDATES}.pt").exists()

    resumed = subprocess.run(command(shards, killed, "checkpoint.resume=true"), capture_output=True, text=True,
                             env=env, timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = torch.load(tmp_path / "straight" / "checkpoints" / f"update_{UPDATES}.pt", weights_only=True)
    b = torch.load(killed / "checkpoints" / f"update_{UPDATES}.pt", weights_only=True)
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["data"] == b["data"] and a["data"]["cc3m"]["positions"][0]


def test_a_missing_shard_is_one_line(tmp_path, shards, capsys):
    from vlfw.cli.run import main

    assert main(command(tmp_path / "nowhere" / "{00000..00003}.tar", tmp_path / "run")[3:]) == 2
    stderr = capsys.readouterr().err
    assert "vlfw_run: error: " in stderr and "nowhere/00000.tar: shard not found" in stderr
    assert "Traceback" not in stderr
