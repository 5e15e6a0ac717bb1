import pytest
import torch
from torch import nn

from vlfw.errors import CheckpointError
from vlfw.runner import checkpoint as ckpt
from vlfw.runner import run


def test_atomic_save_survives_a_crash_mid_write(tmp_path, monkeypatch):
    manager = ckpt.CheckpointManager(tmp_path, keep_last=2)
    manager.save({"model": {"w": torch.ones(3)}, "counters": {"update": 1}}, 1)
    real_save = torch.save

    def crashing_save(obj, handle, *args, **kwargs):
        handle.write(b"half a checkpoint")
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(RuntimeError, match="disk full"):
        manager.save({"model": {"w": torch.zeros(3)}, "counters": {"update": 2}}, 2)
    monkeypatch.setattr(torch, "save", real_save)
    assert manager.last_path().name == "update_1.pt"
    assert torch.equal(ckpt.load_checkpoint(manager.last_path())["model"]["w"], torch.ones(3))
    assert sorted(p.name for p in manager.directory.iterdir()) == ["last", "update_1.pt"]  # no temp left


def test_keep_last_prunes_old_files(tmp_path):
    manager = ckpt.CheckpointManager(tmp_path, keep_last=2)
    for update in (3, 6, 9, 12):
        manager.save({"counters": {"update": update}}, update)
    assert sorted(p.name for p in manager.directory.glob("update_*.pt")) == ["update_12.pt", "update_9.pt"]
    assert manager.last_path().name == "update_12.pt"


def test_corrupt_or_missing_checkpoint_names_the_file(tmp_path):
    bad = tmp_path / "update_3.pt"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="update_3.pt"):
        ckpt.load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="nothing.pt"):
        ckpt.load_checkpoint(tmp_path / "nothing.pt")


def test_resume_from_a_corrupted_last_checkpoint_fails_clearly(toy_config):
    config = toy_config(**{"run_type": "train", "training.max_updates": 3})
    run(config)
    last = ckpt.CheckpointManager(config.save_dir).last_path()
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])
    config.checkpoint.resume = True
    with pytest.raises(CheckpointError, match=last.name):
        run(config)


def test_resume_without_checkpoint_names_the_directory(toy_config):
    config = toy_config(**{"run_type": "train", "checkpoint.resume": True})
    with pytest.raises(CheckpointError, match="checkpoints"):
        run(config)


def test_checkpoint_contents_load_with_weights_only(toy_config):
    config = toy_config(**{"run_type": "train", "training.max_updates": 2, "training.checkpoint_every": 1})
    run(config)
    state = torch.load(ckpt.CheckpointManager(config.save_dir).last_path(), weights_only=True)
    for key in ("format", "model", "optimizer", "scheduler", "step", "data", "rng", "counters", "hooks",
                "config", "plugins"):
        assert key in state, key
    assert state["counters"]["update"] == 2
    assert state["data"]["toy_dataset"]["consumed"] == 16
    assert "toy_model" in state["config"]
    assert (config.save_dir and (ckpt.Path(config.save_dir) / "config.yaml").is_file())


class Old(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2)


class New(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(4, 4)
        self.head = nn.Linear(4, 5)  # different shape: skipped
        self.extra = nn.Linear(2, 2)

    def pretrained_key_map(self):
        return {"encoder_renamed.": "encoder."}


def test_pretrained_applies_key_maps_and_reports(tmp_path):
    old = Old()
    ckpt.atomic_save({"model": old.state_dict()}, tmp_path / "old.pt")
    new = New()
    report = ckpt.load_pretrained(new, tmp_path / "old.pt", {"backbone.": "encoder_renamed."})
    assert torch.equal(new.encoder.weight, old.backbone.weight)
    assert sorted(report["missing"]) == ["extra.bias", "extra.weight", "head.bias", "head.weight"]
    assert len(report["mismatched"]) == 2 and report["unexpected"] == []
    ckpt.export_safetensors(new.state_dict(), tmp_path / "w.safetensors")
    again = New()
    ckpt.load_pretrained(again, tmp_path / "w.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), new.state_dict().values()))


def test_rng_state_round_trip():
    import random

    import numpy as np

    state = ckpt.rng_state()
    first = (random.random(), np.random.rand(), torch.rand(1))
    ckpt.set_rng_state(state)
    assert first == (random.random(), np.random.rand(), torch.rand(1))


# -- a checkpoint that cannot be written ---------------------------------------------------------------
def _checkpoint_files(save_dir):
    folder = ckpt.Path(save_dir) / "checkpoints"
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _run_three_then_fail(tmp_path, capsys, monkeypatch, break_writes, **overrides):
    """3 updates written normally; a resume to 6 whose write of update 6 fails through the command
    line: (exit code, stderr, files before, files after)."""
    import runner_toys

    from vlfw.cli.run import main

    args = ["run_type=train", "training.checkpoint_every=3", *(f"{k}={v}" for k, v in overrides.items())]
    assert main(runner_toys.command_line(tmp_path, *args, "training.max_updates=3")) == 0
    before = _checkpoint_files(tmp_path)
    capsys.readouterr()
    break_writes()
    code = main(runner_toys.command_line(tmp_path, *args, "training.max_updates=6", "checkpoint.resume=true"))
    monkeypatch.undo()
    return code, capsys.readouterr().err, before, _checkpoint_files(tmp_path)


def _error_lines(err):
    return [line for line in err.splitlines() if line.startswith("vlfw_run: error:")]


@pytest.mark.parametrize("where", ["torch.save", "os.replace"])
def test_a_failing_checkpoint_write_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, capsys, monkeypatch, where):
    import errno

    real_save, real_replace = torch.save, ckpt.os.replace

    def full_disk_save(obj, handle, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("counters", {}).get("update") == 6:
            handle.write(b"half a checkpoint")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, handle, *args, **kwargs)

    def read_only_replace(source, target, *args, **kwargs):
        if str(target).endswith("update_6.pt"):
            raise OSError(errno.EROFS, "Read-only file system", str(target))
        return real_replace(source, target, *args, **kwargs)

    def break_writes():
        if where == "torch.save":
            monkeypatch.setattr(torch, "save", full_disk_save)
        else:
            monkeypatch.setattr(ckpt.os, "replace", read_only_replace)

    code, err, before, after = _run_three_then_fail(tmp_path, capsys, monkeypatch, break_writes)
    assert code == 2 and "Traceback" not in err
    cause = "No space left on device (ENOSPC)" if where == "torch.save" else "Read-only file system (EROFS)"
    assert _error_lines(err) == [
        f"vlfw_run: error: cannot write {tmp_path / 'checkpoints' / 'update_6.pt'}: {cause}: the checkpoint of "
        "update 6 is not saved; the 'last' pointer still names update_3.pt, which is unchanged. Free space or fix "
        f"the permissions of {tmp_path / 'checkpoints'}, then resume with checkpoint.resume=auto"]
    assert after == before  # update_3.pt and the pointer as they were; no temporary left behind


def test_a_read_only_checkpoints_folder_is_one_line_and_changes_nothing(tmp_path, capsys, monkeypatch):
    import os
    import stat

    folder = tmp_path / "checkpoints"

    def make_read_only():
        folder.chmod(stat.S_IRUSR | stat.S_IXUSR)

    try:
        code, err, before, after = _run_three_then_fail(tmp_path, capsys, monkeypatch, make_read_only)
        writable = os.access(folder, os.W_OK)
    finally:
        folder.chmod(stat.S_IRWXU)
    if writable:
        pytest.skip("running as root: a read-only mode does not stop writes")
    assert code == 2 and "Traceback" not in err
    [line] = _error_lines(err)
    assert f"cannot write {folder / 'update_6.pt'}: Permission denied (EACCES)" in line
    assert after == before
