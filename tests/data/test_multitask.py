import collections

import pytest
import torch

from vlfw.data.multitask import DatasetStream, MultitaskIterator, build_iteration_strategy
from vlfw.errors import ConfigError
from vlfw.registry import ITERATION_STRATEGIES

SIZES = {"a": 100, "b": 400, "c": 1600}


def strategy(name, seed=0, **config):
    return build_iteration_strategy({"iteration_strategy": name, **config}, SIZES, seed)


def frequencies(s, updates=20000):
    counts = collections.Counter(s.choose(u) for u in range(updates))
    return {n: counts[n] / updates for n in SIZES}


@pytest.mark.parametrize("name, config, target", [
    ("size_proportional", {}, {"a": 1 / 21, "b": 4 / 21, "c": 16 / 21}),
    ("temperature_scaled", {"temperature": 2.0}, {"a": 10 / 70, "b": 20 / 70, "c": 40 / 70}),
    ("fixed_ratio", {"ratios": {"a": 1, "b": 1, "c": 2}}, {"a": 0.25, "b": 0.25, "c": 0.5}),
    ("round_robin", {}, {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}),
])
def test_observed_frequencies_match_targets(name, config, target):
    s = strategy(name, **config)
    assert s.probabilities() == pytest.approx(target)
    observed = frequencies(s)
    for key in SIZES:
        assert observed[key] == pytest.approx(target[key], abs=0.015), (key, observed)


def test_choice_is_a_pure_function_of_seed_and_update():
    first, second = strategy("size_proportional", seed=7), strategy("size_proportional", seed=7)
    torch.manual_seed(0)
    sequence = [first.choose(u) for u in range(500)]
    torch.manual_seed(123)  # global RNG state must not matter
    assert [second.choose(u) for u in reversed(range(500))] == sequence[::-1]
    assert [strategy("size_proportional", seed=8).choose(u) for u in range(500)] != sequence
    assert [strategy("round_robin").choose(u) for u in range(4)] == ["a", "b", "c", "a"]


def test_single_dataset_draws_nothing():
    s = build_iteration_strategy({"iteration_strategy": "temperature_scaled", "temperature": 2.0}, {"only": 5}, 0)
    state = torch.get_rng_state()
    assert {s.choose(u) for u in range(50)} == {"only"}
    assert torch.equal(state, torch.get_rng_state())


def test_invalid_configs_are_clear():
    with pytest.raises(ConfigError, match="ratios"):
        strategy("fixed_ratio", ratios={"a": 1})
    with pytest.raises(ConfigError, match="temperature"):
        strategy("temperature_scaled", temperature=0)
    assert set(ITERATION_STRATEGIES.names()) >= {"size_proportional", "temperature_scaled", "fixed_ratio", "round_robin"}


def make_stream(name, size):
    data = [torch.tensor(i) for i in range(size)]
    return DatasetStream(name, data, lambda items: torch.stack(items), micro_batch_size=2, seed=1)


def test_iterator_modes_and_state():
    streams = {"a": make_stream("a", 10), "b": make_stream("b", 30)}
    one = MultitaskIterator(streams, build_iteration_strategy({"iteration_strategy": "round_robin"},
                                                              {"a": 10, "b": 30}, 0))
    assert [one.datasets_for_update(u) for u in range(3)] == [["a"], ["b"], ["a"]]
    both = MultitaskIterator(streams, one.strategy, "all_per_update")
    assert both.datasets_for_update(5) == ["a", "b"]
    assert one.updates_per_epoch(accumulation_steps=3) == 5  # largest: 30 / 2 = 15 micro-batches
    streams["a"].next()
    assert one.state_dict()["a"]["consumed"] == 2 and one.state_dict()["b"]["consumed"] == 0
    # an unknown mode is refused when the config is loaded (tests/core/test_config_validation.py)


def test_multitask_run_with_two_datasets(tmp_path):
    """Two datasets through the real runner: both train, both evaluate, keys are namespaced."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runner"))
    import runner_toys

    from vlfw.registry import DATASETS
    from vlfw.runner import run

    if "toy_dataset_b" not in DATASETS:
        DATASETS.register("toy_dataset_b")(type("ToyBuilderB", (runner_toys.ToyBuilder,), {}))
    config = runner_toys.make_config(tmp_path, **{
        "datasets": ["toy_dataset", "toy_dataset_b"], "run_type": "train_val", "training.log_every": 1,
        "multitask.iteration_strategy": "round_robin", "multitask.batch_sizes": {"toy_dataset_b": 4},
        "evaluation.metric": "mean", "training.max_updates": 4})
    metrics = run(config)
    assert set(metrics) == {f"val/{d}/{m}" for d in ("toy_dataset", "toy_dataset_b") for m in ("accuracy", "count")}
    state = torch.load(tmp_path / "checkpoints" / "update_3.pt", weights_only=True)
    assert state["data"]["toy_dataset"]["consumed"] == 16 and state["data"]["toy_dataset_b"]["consumed"] == 4
