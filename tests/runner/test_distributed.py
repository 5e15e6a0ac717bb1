"""2-process gloo runs on CPU equal the 1-process run with the same global batch."""

import json
from pathlib import Path

import torch
from runner_helpers import run_script

# SGD so that the weights after one update are a linear function of the gradient
ONE_UPDATE = ["run_type=train_val", "training.max_updates=1", "training.log_every=1",
              "dataset_config.toy_dataset.size=45", "model_config.toy_model.dropout=0", "optimizer.type=sgd",
              "training.clip_grad_norm=0", "scheduler.warmup_updates=0", "logging.tensorboard=false"]


def load(save_dir):
    save_dir = Path(save_dir)
    state = torch.load(save_dir / "checkpoints" / "update_1.pt", weights_only=True)
    log = [json.loads(line) for line in (save_dir / "train_log.jsonl").read_text().splitlines()]
    train = [entry for entry in log if entry["kind"] == "train"][0]
    return state, train, (save_dir / "metrics.json").read_bytes()


def test_ddp_two_ranks_equal_one(tmp_path):
    run_script(tmp_path / "one", *ONE_UPDATE)
    run_script(tmp_path / "two", *ONE_UPDATE, nproc=2)
    one, two = load(tmp_path / "one"), load(tmp_path / "two")
    assert two[0]["world_size"] == 2 and len(two[0]["rng"]) == 2
    assert abs(one[1]["train/total_loss"] - two[1]["train/total_loss"]) < 1e-6
    for key in one[0]["model"]:
        torch.testing.assert_close(one[0]["model"][key], two[0]["model"][key], rtol=1e-5, atol=1e-7)
    # momentum buffers after one SGD step are the gradients themselves
    for index, value in one[0]["optimizer"]["state"].items():
        torch.testing.assert_close(value["momentum_buffer"], two[0]["optimizer"]["state"][index]["momentum_buffer"],
                                   rtol=1e-5, atol=1e-7)
    # the validation set (15) does not split evenly: padding duplicates must not change the metric
    assert one[2] == two[2]
    assert json.loads(two[2])["val/toy_dataset/count"] == 15.0


def test_fsdp_two_ranks_equal_one(tmp_path):
    overrides = [o for o in ONE_UPDATE if not o.startswith("training.max_updates")] + [
        "training.max_updates=3", "training.checkpoint_every=1", "training.clip_grad_norm=1.0"]
    run_script(tmp_path / "one", *overrides)
    run_script(tmp_path / "fsdp", *overrides, "distributed.strategy=fsdp", nproc=2)
    one = torch.load(tmp_path / "one" / "checkpoints" / "update_3.pt", weights_only=True)
    fsdp = torch.load(tmp_path / "fsdp" / "checkpoints" / "update_3.pt", weights_only=True)
    for key in one["model"]:
        torch.testing.assert_close(one["model"][key], fsdp["model"][key], rtol=1e-5, atol=1e-6)
    assert (tmp_path / "one" / "metrics.json").read_bytes() == (tmp_path / "fsdp" / "metrics.json").read_bytes()


def test_a_checkpoint_rank_0_cannot_write_stops_every_rank_with_one_line(tmp_path):
    """Rank 0 writes; when its write fails, rank 1 must not wait for it in a barrier: both stop."""
    result = run_script(tmp_path / "run", "run_type=train", "training.max_updates=6", "training.checkpoint_every=3",
                        "training.callbacks=[{type: toy_full_disk, params: {at: 5}}]", nproc=2, expect=None)
    # torchrun reports the first rank that exits with 2 and SIGTERMs the other, which may or may not
    # have exited by then: the lines below show that both ranks stopped with their own error
    assert result.returncode != 0 and result.stderr.count("exitcode  : 2 ") >= 1, result.stderr[-4000:]
    # counted in the whole text: the two ranks share stderr, so one's line may start inside the other's
    assert result.stderr.count("runner_toys: error: ") == 2, result.stderr[-4000:]
    assert result.stderr.count("update_6.pt: No space left on device (ENOSPC): the checkpoint of update 6 is not saved") == 1
    assert result.stderr.count("runner_toys: error: rank 0 could not write the checkpoint of update 6 ") == 1
    assert (tmp_path / "run" / "checkpoints" / "last").read_text().strip() == "update_3.pt"
