"""The training loop's own cost, this checkout against another one (e.g. the commit before a runner
change), side by side: interleaved rounds, each a fresh process of either checkout running the same
small training run; the runner's logged `train/samples_per_second` of every log window but the
first (warm-up) gives a round's median throughput.

    git worktree add /tmp/vlfw-before <commit>
    python tools/bench/runner_overhead.py --baseline /tmp/vlfw-before --rounds 6 --updates 240

A small model (late fusion, hidden 32, 96 px Shapes images, batch 8, one thread) makes the
loop's fixed per-update costs (the update step, the hooks, logging) as visible as they can be.
Writes nothing outside a temporary directory; prints one line per round and the median ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[2]
ARGS = ["dataset_config.vqa2.shapes.size=tiny", "training.batch_size=8", "training.progress_bar=false",
        "model_config.late_fusion.hidden_size=32", "model_config.late_fusion.text_layers=1",
        "training.eval_every=0", "training.checkpoint_every=0", "checkpoint.export_safetensors=false",
        "logging.tensorboard=false", "run_type=train"]


def one_round(root: Path, updates: int, log_every: int, save_dir: Path) -> float:
    """Median samples/s over the log windows after the first, of one fresh run of `root`'s code."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    paths = [root, root / "plugins" / "vlbert", root / "plugins" / "vlmo"]
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in paths)
    command = [sys.executable, "-m", "vlfw.cli.run", f"config={root / 'projects' / 'baselines' / 'shapes_vqa2.yaml'}",
               *ARGS, f"training.max_updates={updates}", f"training.log_every={log_every}", f"save_dir={save_dir}"]
    result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=3600)
    if result.returncode != 0:
        raise SystemExit(f"run of {root} failed:\n{result.stderr[-2000:]}")
    lines = [json.loads(line) for line in (save_dir / "train_log.jsonl").read_text().splitlines()]
    rates = [line["train/samples_per_second"] for line in lines if line.get("kind") == "train"]
    return statistics.median(rates[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", required=True, type=Path, help="another vlfw checkout (e.g. a git worktree)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--updates", type=int, default=240)
    parser.add_argument("--log-every", type=int, default=20)
    args = parser.parse_args()
    ratios = []
    with tempfile.TemporaryDirectory() as scratch:
        for round_number in range(args.rounds):
            order = [("baseline", args.baseline), ("this", HERE)]
            if round_number % 2:
                order.reverse()  # neither side always runs first
            rates = {}
            for name, root in order:
                rates[name] = one_round(root.resolve(), args.updates, args.log_every,
                                        Path(scratch) / f"{name}_{round_number}")
            ratios.append(rates["this"] / rates["baseline"])
            print(f"round {round_number}: baseline {rates['baseline']:.1f} samples/s, this {rates['this']:.1f} "
                  f"samples/s, ratio {ratios[-1]:.3f}", flush=True)
    print(f"median ratio (this / baseline) over {args.rounds} rounds: {statistics.median(ratios):.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f})")


if __name__ == "__main__":
    main()
