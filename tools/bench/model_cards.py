"""Memory per sample of every registered model and size, for `vlfw_list models --details`.

    python tools/bench/model_cards.py                         # every model, sizes tiny + small
    python tools/bench/model_cards.py --models vlmo --sizes tiny base
    python tools/bench/model_cards.py --sizes all --dry-run   # print, do not write

For each model and size: one training step (forward + backward of the sum of the model's output
means, a stand-in for its loss; gradients allocated) and one inference forward (eval mode,
torch.no_grad), at batch 1 and at batch 8, each in a fresh Python process on the CPU with
OMP_NUM_THREADS=1 (default). The figure is the growth of the process's peak resident set size
during the step (Linux: /proc/self/clear_refs resets VmHWM right before it), so it covers the
activations, the gradients and the temporary buffers, not the weights, which exist before.
"Per sample" is (batch 8 - batch 1) / 7: what one more sample costs.

Inputs are real Shapes-world batches (the tiny world by default, generated into the cache on
first use): the model's first task among vqa, captioning, retrieval, classification (else its
first task), read by the first registered dataset builder of that task, with the model's first
declared visual input (VISUAL_INPUTS; region features in the world's npy layout). The figures
are merged into vlfw/models/model_cards.json under "model/size" (other entries are kept).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

PREFERRED_TASKS = ("vqa", "captioning", "retrieval", "classification")
DEFAULT_OUT = Path(__file__).resolve().parents[2] / "vlfw" / "models" / "model_cards.json"


def _status() -> dict[str, int]:
    """VmRSS and VmHWM of this process, KiB."""
    text = Path("/proc/self/status").read_text()
    return {key: int(re.search(rf"{key}:\s+(\d+)", text).group(1)) for key in ("VmRSS", "VmHWM")}


def _release_memory() -> None:
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)  # freed heap pages back to the system
    except (OSError, AttributeError):
        pass


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else the machine type."""
    try:
        found = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
    except OSError:
        found = None
    return found.group(1).strip() if found else (platform.processor() or platform.machine())


def choose_task(model_class) -> str:
    tasks = sorted(model_class.supported_tasks())
    return next((t for t in PREFERRED_TASKS if t in tasks), tasks[0])


def builder_for(task: str, visual: str | None, world: str):
    from vlfw.registry import DATASETS
    from vlfw.testing import shapes_builder

    name = next((e.name for e in DATASETS.entries() if getattr(e.obj, "TASK", None) == task), None)
    if name is None:
        raise SystemExit(f"no dataset builder of task {task!r} is registered")
    overrides = {"visual": visual or "regions"}
    if overrides["visual"] == "regions":
        overrides["features"] = {"format": "npy"}
    return shapes_builder(name, size=world, **overrides)


def measure_one(model_name: str, size: str, mode: str, batch_size: int, world: str) -> dict:
    """In this process: build, then one step; the peak RSS growth during the step."""
    import torch

    from vlfw import plugins
    from vlfw.models.cards import card_config, visual_inputs
    from vlfw.registry import MODELS

    plugins.load_plugins()
    model_class = MODELS.get(model_name)
    visuals = visual_inputs(model_class)
    visual = visuals[0] if visuals else None
    task = choose_task(model_class)
    builder = builder_for(task, visual, world)
    info = builder.task_info()
    dataset = builder.build("train")
    batch = builder.collate([dataset[i % len(dataset)] for i in range(batch_size)])
    torch.manual_seed(0)
    model = model_class(card_config(model_class, size), {builder.name: info})
    model.train(mode == "training")
    shapes = {k: "x".join(map(str, v.shape)) for k, v in batch.items() if isinstance(v, torch.Tensor)} \
        if hasattr(batch, "items") else {}
    _release_memory()
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = _status()["VmRSS"]
    start = time.perf_counter()
    if mode == "training":
        outputs = model(batch)
        loss = sum(v.float().mean() for v in outputs.values()
                   if isinstance(v, torch.Tensor) and v.is_floating_point() and v.requires_grad)
        loss.backward()
    else:
        with torch.no_grad():
            outputs = model(batch)
    seconds = time.perf_counter() - start
    peak = _status()["VmHWM"]
    return {"model": model_name, "size": size, "mode": mode, "batch": batch_size, "task": task,
            "dataset": builder.name, "visual": info.visual if visual else None,
            "growth_mb": (peak - before) / 1024, "seconds": seconds,
            "parameters": sum(p.numel() for p in model.parameters()), "inputs": shapes}


def run_child(model_name: str, size: str, mode: str, batch_size: int, world: str, threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    command = [sys.executable, __file__, "--child", model_name, size, mode, str(batch_size), "--world", world]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{model_name}/{size} {mode} batch {batch_size}: {tail}")
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=None, help="registered model names (default: all)")
    parser.add_argument("--sizes", nargs="*", default=["tiny", "small"],
                        help="sizes to measure, 'all', or 'default' (models without sizes are always measured)")
    parser.add_argument("--world", default="tiny", help="Shapes world size of the inputs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--dry-run", action="store_true", help="print the figures, write nothing")
    parser.add_argument("--child", nargs=4, metavar=("MODEL", "SIZE", "MODE", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        model_name, size, mode, batch = args.child
        print(json.dumps(measure_one(model_name, size, mode, int(batch), args.world)))
        return
    if not Path("/proc/self/clear_refs").exists():
        raise SystemExit("this tool reads Linux's /proc/self/status and /proc/self/clear_refs")

    import torch

    from vlfw import plugins
    from vlfw.models.cards import DEFAULT_SIZE, model_sizes
    from vlfw.registry import MODELS
    from vlfw.world import ensure_world

    plugins.load_plugins()
    ensure_world(args.world, seed=0)  # once, before the children read it
    names = args.models or MODELS.names()
    out = Path(args.out)
    data = json.loads(out.read_text()) if out.is_file() else {}
    data.setdefault("models", {})
    data["about"] = ("peak RSS growth (MiB) of one step: training = forward + backward, inference = forward "
                     "under no_grad; per_sample_mb = (batch 8 - batch 1) / 7; written by tools/bench/model_cards.py")
    for name in names:
        model_class = MODELS.get(name)
        sizes = model_sizes(model_class)
        wanted = sizes if "all" in args.sizes or sizes == [DEFAULT_SIZE] else [s for s in sizes if s in args.sizes]
        for size in wanted:
            entry = {"device": f"cpu ({cpu_model()})", "threads": args.threads,
                     "torch": torch.__version__, "world": args.world,
                     "measured": datetime.date.today().isoformat()}
            started = time.perf_counter()
            try:
                for mode in ("training", "inference"):
                    one, eight = (run_child(name, size, mode, b, args.world, args.threads) for b in (1, 8))
                    entry.update(task=one["task"], dataset=one["dataset"], visual=one["visual"],
                                 parameters=one["parameters"], inputs_batch_8=eight["inputs"])
                    entry[mode] = {"batch_1_mb": round(one["growth_mb"], 1), "batch_8_mb": round(eight["growth_mb"], 1),
                                   "per_sample_mb": round(max(eight["growth_mb"] - one["growth_mb"], 0.0) / 7, 2),
                                   "batch_8_seconds": round(eight["seconds"], 3)}
            except RuntimeError as error:
                print(f"{name}/{size}: skipped: {error}", flush=True)
                continue
            data["models"][f"{name}/{size}"] = entry
            t, i = entry["training"], entry["inference"]
            print(f"{name}/{size} ({entry['task']}, {entry['visual'] or 'text'}): training {t['batch_1_mb']} / "
                  f"{t['batch_8_mb']} MiB (b1 / b8), {t['per_sample_mb']} MiB per sample; inference "
                  f"{i['batch_1_mb']} / {i['batch_8_mb']} MiB, {i['per_sample_mb']} per sample "
                  f"[{time.perf_counter() - started:.0f} s]", flush=True)
            if not args.dry_run:
                data["models"] = dict(sorted(data["models"].items()))
                out.write_text(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    main()
