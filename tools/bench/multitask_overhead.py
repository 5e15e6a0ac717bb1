"""Multi-task overhead: time per update of a multi-task run vs. the same batches trained single-task.

    python tools/bench/multitask_overhead.py [--config projects/multitask/vlbert_shapes.yaml]
        [--updates 200] [--rounds 3] [--switching] [key=value ...]

The multi-task run trains `--updates` updates, each on the dataset its iteration strategy draws.
Then every dataset is trained alone (a one-dataset run of the same recipe) for exactly the
number of updates it got in the multi-task run; each dataset's stream yields the same batches
in both cases (the samplers depend on the seed and the dataset only). Both go through the real
runner's update (`Trainer.run_update`: data, forward, losses, backward, optimizer step); set-up,
evaluation and checkpoints are outside the timed loop. The rounds alternate multi- and single-task
in one process; the overhead is (multi-task time / sum of single-task times) - 1, per round,
reported as the median and the range over the rounds after the first `--discard` (default 1: the
first round pays the fresh process's one-time costs). Before timing, the multi-task trainer is
warmed up until every dataset had two updates, and each single-task trainer replays its
dataset's share of that warm-up, so no side pays its first updates inside the timed loop.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import Counter

import torch

from vlfw.config import load_config
from vlfw.runner.build import build_run
from vlfw.runner.distributed import setup_distributed
from vlfw.runner.launch import seed_everything
from vlfw.runner.trainer import Trainer

WARMUP = 5  # at least this many untimed updates per trainer (loader start-up, allocator warm-up)
WARMUP_PER_DATASET = 2  # the multi-task warm-up goes on until every dataset had this many
WARMUP_CAP = 200


def make_trainer(args: list[str], save_dir: str) -> Trainer:
    config = load_config([*args, f"save_dir={save_dir}", "training.eval_every=0", "training.checkpoint_every=0",
                          "training.progress_bar=false", "logging.tensorboard=false", "logging.jsonl=false",
                          "training.num_workers=0"])
    context = setup_distributed(config)
    seed_everything(int(config.seed))
    trainer = Trainer(build_run(config, context))
    trainer.setup_training()
    trainer.train_model.train()
    return trainer


def warm_up(trainer: Trainer) -> list[str]:
    """Untimed updates until every dataset was trained WARMUP_PER_DATASET times (and >= WARMUP):
    then each single-task trainer can be warmed on its own batches before its timed loop too."""
    names: list[str] = []
    while len(names) < WARMUP_CAP and (len(names) < WARMUP or any(
            names.count(n) < WARMUP_PER_DATASET for n in trainer.run_spec.builders)):
        names += train_updates(trainer, 1)[1]
    return names


def train_updates(trainer: Trainer, count: int) -> tuple[float, list[str]]:
    """Seconds for `count` updates of `trainer`, and the dataset of each."""
    names: list[str] = []
    start = time.perf_counter()
    for _ in range(count):
        names += trainer.run_spec.iterator.datasets_for_update(trainer.update)
        trainer.run_update()
        trainer.update += 1
    return time.perf_counter() - start, names


def switching(base: list[str], save_dir: str, updates: int, rounds: int) -> None:
    """One multi-task trainer times `updates` updates in the drawn dataset order and the same
    updates grouped by dataset, alternating which goes first: the cost of switching datasets
    between updates, free of the differences between separately built trainers."""
    trainer = make_trainer(base, f"{save_dir}/switching")
    warm_up(trainer)
    drawn = [n for u in range(trainer.update, trainer.update + updates)
             for n in trainer.run_spec.iterator.datasets_for_update(u)]

    def timed(schedule: list[str]) -> float:
        start = trainer.update
        trainer.run_spec.iterator.datasets_for_update = lambda update: [schedule[update - start]]
        return train_updates(trainer, len(schedule))[0]

    print("| round | drawn order (s) | grouped by dataset (s) | drawn / grouped |\n|---|---|---|---|")
    for index in range(rounds):
        first, second = (drawn, sorted(drawn)) if index % 2 == 0 else (sorted(drawn), drawn)
        a, b = timed(first), timed(second)
        mixed, grouped = (a, b) if index % 2 == 0 else (b, a)
        print(f"| {index} | {mixed:.2f} | {grouped:.2f} | {mixed / grouped:.3f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="projects/multitask/vlbert_shapes.yaml")
    parser.add_argument("--updates", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--switching", action="store_true",
                        help="time dataset switching inside one trainer instead (drawn vs grouped order)")
    parser.add_argument("--discard", type=int, default=1,
                        help="leading rounds left out of the median (the process's one-time costs)")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides for every run")
    args = parser.parse_args()
    base = [f"config={args.config}", *args.overrides, f"training.max_updates={args.updates + WARMUP_CAP}"]
    save_dir = tempfile.mkdtemp(prefix="vlfw-mt-overhead-")
    if args.switching:
        switching(base, save_dir, args.updates, args.rounds)
        return
    ratios, rows = [], []
    for round_index in range(args.rounds):
        multi = make_trainer(base, f"{save_dir}/multi")
        warm_names = warm_up(multi)
        multi_time, names = train_updates(multi, args.updates)
        counts = Counter(names)
        single_time = 0.0
        for name in multi.run_spec.builders:
            if counts[name] == 0:
                continue
            # the single-task run consumes this dataset's stream exactly as the multi-task run did:
            # its warm-up updates are the ones the multi-task run spent on this dataset before timing
            single = make_trainer([*base, f"datasets=[{name}]"], f"{save_dir}/{name}")
            train_updates(single, warm_names.count(name))
            single_time += train_updates(single, counts[name])[0]
            del single
        ratios.append(multi_time / single_time - 1.0)
        rows.append((round_index, multi_time, single_time, dict(counts)))
        print(f"round {round_index}: multi-task {multi_time:.2f} s, single-task {single_time:.2f} s, "
              f"overhead {100 * ratios[-1]:+.2f}%  updates per dataset {dict(counts)}", flush=True)
        del multi
    print(f"\n{args.config}, {args.updates} timed updates per round, {args.rounds} rounds, "
          f"{torch.get_num_threads()} threads\n")
    print("| round | multi-task (s) | same batches single-task (s) | overhead |\n|---|---|---|---|")
    for (index, m, s, _), ratio in zip(rows, ratios):
        print(f"| {index} | {m:.2f} | {s:.2f} | {100 * ratio:+.2f}% |")
    kept = ratios[args.discard:] or ratios
    print(f"\nmedian overhead {100 * statistics.median(kept):+.2f}% (range {100 * min(kept):+.2f}% .. "
          f"{100 * max(kept):+.2f}%) over rounds {len(ratios) - len(kept)}..{len(ratios) - 1}")


if __name__ == "__main__":
    main()
