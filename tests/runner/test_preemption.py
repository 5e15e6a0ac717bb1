"""SIGTERM, what schedulers and torchrun send before they kill a job: the run writes a checkpoint
at the next update boundary, exits with 143 and one line (no traceback), and the requeued run
with checkpoint.resume=auto ends bit-for-bit like an uninterrupted one. Under torchrun every rank
stops after the same update, whichever rank got the signal."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from runner_helpers import TOYS, run_script, script_env
from test_resume import COMMON, assert_same_run

SLEEP = "training.callbacks=[{type: toy_sleep, params: {seconds: 0.15}}]"


def terminate_at(update: int, ranks=(0,)) -> str:
    return f"training.callbacks=[{{type: toy_terminate, params: {{at: {update}, ranks: {list(ranks)}}}}}]"


def last_pointer(save_dir: Path) -> str:
    return (save_dir / "checkpoints" / "last").read_text().strip()


@pytest.fixture
def sigterm_guard():
    """In-process tests signal their own process: without the trainer's handler the signal lands
    here (the test then fails) instead of killing pytest."""
    received = []
    previous = signal.signal(signal.SIGTERM, lambda *_: received.append(True))
    yield received
    signal.signal(signal.SIGTERM, previous)


def test_sigterm_to_the_process_group_checkpoints_exits_143_and_resumes_exactly(tmp_path):
    # a larger training set: the loader workers are mid-epoch when the process group gets the signal
    overrides = COMMON + ["training.num_workers=2", "dataset_config.toy_dataset.size=960", SLEEP]
    straight, preempted = tmp_path / "straight", tmp_path / "preempted"
    run_script(straight, *overrides)

    process = subprocess.Popen([sys.executable, str(TOYS), str(preempted), *overrides], env=script_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.time() + 90
        while not ((preempted / "checkpoints" / "last").is_file() and last_pointer(preempted) == "update_6.pt"):
            assert process.poll() is None and time.time() < deadline, "the run ended before it could be signalled"
            time.sleep(0.01)
        os.killpg(process.pid, signal.SIGTERM)  # as a scheduler does: the main process and its loader workers
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 143, stderr[-3000:]
    assert "Traceback" not in stderr
    ours = [line for line in stderr.splitlines() if line.startswith("runner_toys:")]
    assert len(ours) == 1 and "stopped on SIGTERM after update" in ours[0], ours
    stopped = int(re.search(r"after update (\d+) of 12", ours[0]).group(1))
    assert 6 <= stopped < 12
    assert last_pointer(preempted) == f"update_{stopped}.pt"
    state = torch.load(preempted / "checkpoints" / f"update_{stopped}.pt", weights_only=True)
    assert state["counters"]["update"] == stopped
    assert "test/" not in (preempted / "metrics.json").read_text()  # it stopped: no final test

    run_script(preempted, *overrides, "checkpoint.resume=auto")  # the requeued job
    assert_same_run(straight, preempted)


def test_the_command_line_writes_the_checkpoint_of_the_update_it_stops_after(tmp_path, capsys, sigterm_guard):
    """In-process through vlfw.cli.run.main: SIGTERM during update 5's hooks (not a checkpoint
    update) -> update_5.pt, exit code 143, one line; the resumed run equals the straight one."""
    import runner_toys  # noqa: F401  (registers the toy components)

    from vlfw.cli.run import main

    common = ["training.checkpoint_every=3", "checkpoint.keep_last=10"]
    straight, preempted = tmp_path / "straight", tmp_path / "preempted"
    assert main(runner_toys.command_line(straight, *common, terminate_at(0))) == 0
    capsys.readouterr()

    code = main(runner_toys.command_line(preempted, *common, terminate_at(5)))
    err = capsys.readouterr().err
    assert not sigterm_guard, "SIGTERM reached the test's handler: training did not handle it"
    assert code == 143
    ours = [line for line in err.splitlines() if line.startswith("vlfw_run:")]
    assert ours == [f"vlfw_run: stopped on SIGTERM after update 5 of 12; {preempted / 'checkpoints' / 'update_5.pt'} "
                    "is written: run the same command with checkpoint.resume=auto (or true) to continue"]
    assert "Traceback" not in err
    assert last_pointer(preempted) == "update_5.pt"
    state = torch.load(preempted / "checkpoints" / "update_5.pt", weights_only=True)
    assert state["counters"]["update"] == 5 and state["hooks"]["toy_terminate"] == {}
    assert sorted(p.name for p in (preempted / "checkpoints").glob("update_*.pt")) == ["update_3.pt", "update_5.pt"]

    assert main(runner_toys.command_line(preempted, *common, terminate_at(5), "checkpoint.resume=auto")) == 0
    assert_same_run(straight, preempted)
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL  # the previous handler is back (the guard's)


def test_under_torchrun_every_rank_stops_after_the_same_update(tmp_path):
    """Only rank 1 gets the signal (after update 5); rank 0 must stop there too and write the
    checkpoint, and the two-rank job resumes from it."""
    overrides = ["training.checkpoint_every=4", "training.eval_every=4", "checkpoint.keep_last=10"]
    save_dir = tmp_path / "run"
    result = run_script(save_dir, *overrides, terminate_at(5, ranks=[1]), nproc=2, expect=None)
    # torchrun reports the first rank that exits (143) and SIGTERMs the other, which may or may not
    # have exited by then: the lines below show that both ranks stopped after update 5 on their own
    assert result.returncode != 0 and result.stderr.count("exitcode  : 143") >= 1, result.stderr[-4000:]
    # counted in the whole text: the two ranks share stderr, so one's line may start inside the other's
    assert result.stderr.count("runner_toys: ") == 2, result.stderr[-4000:]
    assert result.stderr.count("runner_toys: stopped on SIGTERM after update 5 of 12; ") == 2
    assert last_pointer(save_dir) == "update_5.pt"
    assert sorted(p.name for p in (save_dir / "checkpoints").glob("update_*.pt")) == ["update_4.pt", "update_5.pt"]
    state = torch.load(save_dir / "checkpoints" / "update_5.pt", weights_only=True)
    assert state["counters"]["update"] == 5 and state["world_size"] == 2 and len(state["rng"]) == 2

    run_script(save_dir, *overrides, terminate_at(5, ranks=[1]), "checkpoint.resume=auto", nproc=2)
    assert last_pointer(save_dir) == "update_12.pt"
    metrics = json.loads((save_dir / "metrics.json").read_text())
    assert "test/toy_dataset/accuracy" in metrics


def test_a_crash_with_loader_workers_still_ends_the_process(tmp_path):
    """Workers ignore only a SIGTERM from others: the one the main process sends its workers when
    it exits after an uncaught error still ends them (a worker ignoring it would hang the exit)."""
    result = run_script(tmp_path / "run", "training.num_workers=2", "dataset_config.toy_dataset.crash_index=5",
                        timeout=60, expect=None)
    assert result.returncode == 1 and "toy crash at index 5" in result.stderr, result.stderr[-3000:]
