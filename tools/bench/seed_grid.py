"""Shared by the ablation grids (vlmo_ablation.py, cmal_ladder.py): variants x seeds of training runs."""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence

import torch


def add_grid_arguments(parser: argparse.ArgumentParser, override_help: str) -> None:
    """--seeds, --threads, --save-dir and trailing key=value overrides."""
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--save-dir", default=None)
    parser.add_argument("override", nargs="*", help=override_help)


def run_grid(args: argparse.Namespace, variants: Sequence[str], label: str, prefix: str,
             train: Callable[[str, int, str], float]) -> dict[str, dict[int, float]]:
    """train(variant, seed, save_dir) -> the metric, for every variant and seed; prints each as it ends."""
    if args.threads:
        torch.set_num_threads(args.threads)
    save_dir = args.save_dir or tempfile.mkdtemp(prefix=prefix)
    results: dict[str, dict[int, float]] = {}
    for variant in variants:
        for seed in args.seeds:
            start = time.time()
            results.setdefault(variant, {})[seed] = value = train(variant, seed, save_dir)
            print(f"{variant} seed {seed}: {label}={value:.2f} ({time.time() - start:.0f} s)", flush=True)
    return results


def print_table(first_column: str, results: dict[str, dict[int, float]], seeds: Sequence[int]) -> None:
    """A Markdown table: one row per variant, one column per seed, and their mean."""
    print(f"| {first_column} | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |")
    print("|---|" + "---|" * (len(seeds) + 1))
    for variant, by_seed in results.items():
        cells = " | ".join(f"{by_seed[s]:.2f}" for s in seeds)
        print(f"| {variant} | {cells} | {statistics.mean(by_seed[s] for s in seeds):.2f} |")
