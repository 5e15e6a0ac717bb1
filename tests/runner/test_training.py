import json
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from vlfw.errors import VlfwError
from vlfw.registry import SCHEDULERS
from vlfw.runner import run
from vlfw.runner.optim import build_optimizer, parameter_groups
from vlfw.runner.schedulers import build_scheduler


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.heads = nn.ModuleDict({"a": nn.Linear(4, 2)})


def test_parameter_groups_decay_and_multipliers():
    groups = parameter_groups(Net(), 0.1, ["bias", "norm"], {r"heads\.": 20.0}, lr=1e-3)
    by_name = {name: group for group in groups for name in group["param_names"]}
    assert by_name["encoder.weight"]["weight_decay"] == 0.1 and by_name["encoder.weight"]["lr"] == 1e-3
    for name in ("encoder.bias", "norm.weight", "norm.bias", "heads.a.bias"):
        assert by_name[name]["weight_decay"] == 0.0, name
    assert by_name["heads.a.weight"]["weight_decay"] == 0.1
    assert by_name["heads.a.weight"]["lr"] == pytest.approx(2e-2)
    assert by_name["heads.a.bias"]["lr"] == pytest.approx(2e-2)
    # 1-d parameters get no decay even when no pattern names them
    groups = parameter_groups(Net(), 0.1, [], {})
    assert {n for g in groups if g["weight_decay"] == 0.0 for n in g["param_names"]} == \
        {"encoder.bias", "norm.weight", "norm.bias", "heads.a.bias"}


def test_build_optimizer_types():
    config = OmegaConf.create({"type": "adamw", "lr": 0.1, "weight_decay": 0.01, "betas": [0.9, 0.99], "eps": 1e-8,
                               "no_decay": ["bias"], "lr_multipliers": {}})
    assert isinstance(build_optimizer(Net(), config), torch.optim.AdamW)
    config.type = "sgd"
    assert isinstance(build_optimizer(Net(), config), torch.optim.SGD)


@pytest.mark.parametrize("kind", ["adamw", "sgd"])
def test_optimizer_implementation(kind):
    """auto: the fused kernel for plain CPU parameters; the others force torch's switches; the
    fused step gives the per-tensor loop's result up to rounding."""
    config = OmegaConf.create({"type": kind, "lr": 0.1, "weight_decay": 0.01, "betas": [0.9, 0.99], "eps": 1e-8,
                               "no_decay": ["bias"], "lr_multipliers": {}})
    seen = {}
    for choice, expected in (("auto", ("fused", True)), ("fused", ("fused", True)), ("foreach", ("foreach", True)),
                             ("for_loop", ("foreach", False))):
        config.implementation = choice
        torch.manual_seed(0)
        net = Net()
        optimizer = build_optimizer(net, config)
        assert all(group[expected[0]] is expected[1] for group in optimizer.param_groups), choice
        for _ in range(3):
            optimizer.zero_grad()
            net.heads["a"](net.norm(net.encoder(torch.ones(2, 4)))).square().sum().backward()
            optimizer.step()
        seen[choice] = torch.cat([p.detach().flatten() for p in net.parameters()])
    for choice in ("fused", "foreach"):
        torch.testing.assert_close(seen[choice], seen["for_loop"], rtol=1e-5, atol=1e-6)


def test_a_resumed_optimizer_keeps_its_implementation():
    from vlfw.runner.checkpoint import load_optimizer_state_dict, optimizer_state_dict

    config = OmegaConf.create({"type": "adamw", "lr": 0.1, "weight_decay": 0.01, "betas": [0.9, 0.99], "eps": 1e-8,
                               "no_decay": [], "lr_multipliers": {}, "implementation": "for_loop"})
    net = Net()
    old = build_optimizer(net, config)
    net.encoder(torch.ones(1, 4)).sum().backward()
    old.step()
    net.zero_grad(set_to_none=True)  # as between updates
    state = optimizer_state_dict(net, old)  # written by a run with the per-tensor loop
    config.implementation = "auto"
    new = build_optimizer(net, config)
    load_optimizer_state_dict(net, new, state)
    assert all(group["fused"] is True for group in new.param_groups)
    assert new.state[net.encoder.weight]["exp_avg"].abs().sum() > 0


def factors(kind, total=10, **extra):
    config = OmegaConf.create({"type": kind, "warmup_updates": 2, "warmup_ratio": 0.0, "min_lr_ratio": 0.0, **extra})
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = build_scheduler(optimizer, config, total)
    out = []
    for _ in range(total):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_scheduler_shapes():
    linear = factors("warmup_linear")
    assert linear[:3] == pytest.approx([0.5, 1.0, 1.0])
    assert linear[2:] == pytest.approx([1 - i / 8 for i in range(8)])
    cosine = factors("warmup_cosine")
    assert cosine[2] == pytest.approx(1.0) and cosine[6] == pytest.approx(0.5)
    assert cosine[9] == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 8)))
    assert factors("constant") == pytest.approx([0.5] + [1.0] * 9)
    assert factors("warmup_linear", min_lr_ratio=0.1)[-1] == pytest.approx(0.1 + 0.9 * (1 / 8))
    assert set(SCHEDULERS.names()) >= {"warmup_linear", "warmup_cosine", "constant"}


def final_weights(save_dir):
    manager_dir = Path(save_dir) / "checkpoints"
    name = (manager_dir / "last").read_text().strip()
    return torch.load(manager_dir / name, weights_only=True)["model"]


def test_gradient_accumulation_matches_full_batch(tmp_path):
    import runner_toys

    common = {"run_type": "train", "training.max_updates": 4, "model_config.toy_model.dropout": 0.0,
              "training.batch_size": 8}
    run(runner_toys.make_config(tmp_path / "full", **common))
    run(runner_toys.make_config(tmp_path / "accum", **common, **{"training.gradient_accumulation_steps": 2}))
    full, accumulated = final_weights(tmp_path / "full"), final_weights(tmp_path / "accum")
    for key in full:
        torch.testing.assert_close(full[key], accumulated[key], rtol=1e-5, atol=1e-6)
    # and it is not trivially equal to a run that saw different data
    run(runner_toys.make_config(tmp_path / "half", **{**common, "training.batch_size": 4}))
    half = final_weights(tmp_path / "half")
    assert any(not torch.allclose(full[k], half[k], atol=1e-6) for k in full)


def test_nan_policy_stop_raises_naming_update_and_dataset(toy_config):
    config = toy_config(**{"run_type": "train", "dataset_config.toy_dataset.nan_index": 5})
    with pytest.raises(VlfwError, match=r"update \d+ on dataset 'toy_dataset'"):
        run(config)


def test_nan_policy_skip_counts_and_keeps_weights_finite(toy_config):
    config = toy_config(**{"run_type": "train", "dataset_config.toy_dataset.nan_index": 5,
                           "training.nan_policy": "skip", "training.log_every": 1})
    run(config)
    lines = [json.loads(line) for line in (Path(config.save_dir) / "train_log.jsonl").read_text().splitlines()]
    # 12 updates of 8 over 48 samples = 2 epochs; sample 5 is in one update of each
    assert lines[-1]["train/skipped_updates"] == 2
    assert all(torch.isfinite(v).all() for v in final_weights(config.save_dir).values())


def test_logged_dataset_losses_average_over_the_updates_that_drew_the_dataset(tmp_path):
    """one_per_update: train/<dataset>/* is the mean over that dataset's updates in the window
    (it was divided by every update of the window, so a dataset drawn 1 in 4 logged 1/4 of its loss)."""
    def logged(log_every, name):
        import runner_toys

        config = runner_toys.make_config(tmp_path / name, **{
            "run_type": "train", "datasets": "[toy_dataset,toy_dataset_b]", "multitask.mode": "one_per_update",
            "training.log_every": log_every})
        run(config)
        lines = (Path(config.save_dir) / "train_log.jsonl").read_text().splitlines()
        return [line for line in map(json.loads, lines) if line["kind"] == "train"]

    every = logged(1, "every")
    windows = logged(4, "windows")
    assert len(every) == 12 and len(windows) == 3
    drawn = {name: sum(f"train/{name}/total_loss" in line for line in every) for name in ("toy_dataset", "toy_dataset_b")}
    assert all(0 < count < 12 for count in drawn.values()), drawn  # both drawn, neither every time
    for index, window in enumerate(windows):
        updates = every[4 * index:4 * index + 4]
        for key in ("train/toy_dataset/total_loss", "train/toy_dataset_b/total_loss", "train/total_loss"):
            values = [line[key] for line in updates if key in line]
            if values:
                assert window[key] == pytest.approx(sum(values) / len(values), rel=1e-5), (index, key)
            else:
                assert key not in window


def test_best_checkpoint_and_early_stopping(toy_config):
    config = toy_config(**{
        "run_type": "train_val_test", "training.max_updates": 20, "training.eval_every": 2,
        "training.checkpoint_every": 100, "training.early_stopping.patience": 2,
        "dataset_config.toy_dataset.metrics": [{"type": "toy_scripted", "params": {"values": [0.1, 0.5, 0.3, 0.2, 0.9]}}],
    })
    metrics = run(config)
    checkpoints = Path(config.save_dir) / "checkpoints"
    assert (checkpoints / "last").read_text().strip() == "update_8.pt"  # stopped after 2 bad evaluations
    best = torch.load(checkpoints / "best.pt", weights_only=True)
    assert best["counters"]["update"] == 4 and best["hooks"]["best_checkpoint"] == {"value": 0.5, "update": 4}
    assert metrics["val/toy_dataset/score"] == 0.2 and metrics["test/toy_dataset/score"] == 0.9
    from safetensors.torch import load_file

    exported = load_file(str(Path(config.save_dir) / "best_model.safetensors"))
    assert all(torch.equal(exported[k], best["model"][k]) for k in best["model"])


def test_min_mode_and_explicit_metric(toy_config):
    config = toy_config(**{
        "run_type": "train_val", "training.max_updates": 6, "training.eval_every": 2,
        "evaluation.metric": "val/toy_dataset/score", "evaluation.mode": "min",
        "dataset_config.toy_dataset.metrics": [{"type": "toy_scripted", "params": {"values": [0.4, 0.1, 0.3]}}],
    })
    run(config)
    best = torch.load(Path(config.save_dir) / "checkpoints" / "best.pt", weights_only=True)
    assert best["hooks"]["best_checkpoint"] == {"value": 0.1, "update": 4}


def test_metrics_json_keys(toy_config):
    config = toy_config()
    returned = run(config)
    written = json.loads((Path(config.save_dir) / "metrics.json").read_text())
    assert written == returned
    assert set(written) == {"val/toy_dataset/accuracy", "val/toy_dataset/count",
                            "test/toy_dataset/accuracy", "test/toy_dataset/count"}
    assert written["test/toy_dataset/count"] == 16.0
    predictions = json.loads((Path(config.save_dir) / "predictions" / "toy_dataset_test.json").read_text())
    assert [p["id"] for p in predictions] == [f"test-{i}" for i in range(16)]
    log_kinds = {json.loads(line)["kind"] for line in (Path(config.save_dir) / "train_log.jsonl").read_text().splitlines()}
    assert log_kinds == {"train", "val", "test"}


def test_eval_only_run_from_resume(toy_config):
    config = toy_config(**{"run_type": "train_val", "training.max_updates": 4})
    run(config)
    config.run_type = "val"
    config.checkpoint.resume = True
    metrics = run(config)
    assert set(metrics) == {"val/toy_dataset/accuracy", "val/toy_dataset/count"}
    assert metrics["val/toy_dataset/count"] == 16.0


def test_bf16_autocast_on_cpu_trains(toy_config):
    config = toy_config(**{"run_type": "train", "training.precision": "bf16", "training.max_updates": 3})
    run(config)
    assert all(torch.isfinite(v).all() for v in final_weights(config.save_dir).values())


def test_tensorboard_scalars_written(toy_config):
    config = toy_config(**{"run_type": "train", "training.max_updates": 2, "logging.tensorboard": True})
    run(config)
    assert list((Path(config.save_dir) / "tensorboard").glob("events.out.tfevents.*"))
