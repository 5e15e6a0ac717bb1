"""Does a trained model read the image? Evaluates a run's weights on its val split twice: as
the data are, and with the visual inputs of every batch handed to another sample of the batch
(sample i gets sample i + B/2's regions or image: half a batch away, because a benchmark lists
the several questions of one image next to each other). A model that ignores the image
gives the same predictions and score both ways; one that reads it changes its predictions and
falls towards the blind level.

    python tools/bench/blindness_probe.py --run save/baselines/attention_shapes [--weights best] [--split val]

`--run`: a run's save_dir (its config.yaml is rebuilt; its best.pt, else its last checkpoint, is
loaded; `--weights PATH` names another file). Prints, per dataset of the run, the primary metric
with the real and the shuffled visual inputs and the share of samples whose prediction changed.
"""

from __future__ import annotations

import argparse
import os

import torch
from torch.utils.data import DataLoader

from vlfw.config import load_config
from vlfw.runner import checkpoint as ckpt
from vlfw.runner.build import build_metrics, build_run
from vlfw.runner.distributed import DistributedContext

VISUAL_FIELDS = ("region_features", "region_boxes", "region_mask", "region_class_probs", "image_size", "image")
PREDICTION_KEYS = ("logits", "region_logits")


def shuffled(batch):
    """The batch with each sample's visual fields taken from the sample half a batch away."""
    out = type(batch)(batch)
    shift = max(1, batch.batch_size // 2)
    for name in VISUAL_FIELDS:
        if name in out and torch.is_tensor(out[name]):
            out[name] = out[name].roll(shift, dims=0)
    return out


def predictions(outputs):
    for key in PREDICTION_KEYS:
        if key in outputs:
            return outputs[key].float().argmax(dim=-1)
    return None


def weights_path(run_dir: str, weights: str | None) -> str:
    if weights and weights not in ("best", "last"):
        return weights
    manager = ckpt.CheckpointManager(run_dir, 0)
    if weights != "last" and manager.best_path.is_file():
        return str(manager.best_path)
    last = manager.last_path()
    if last is None:
        raise SystemExit(f"{run_dir}: no best.pt and no last checkpoint to probe")
    return str(last)


@torch.no_grad()
def probe(run_dir: str, weights: str | None, split: str, batch_size: int) -> list[dict]:
    config = load_config([f"config={os.path.join(run_dir, 'config.yaml')}", "run_type=val"])
    run = build_run(config, DistributedContext())
    ckpt.load_model_weights(run.model, weights_path(run_dir, weights))
    model = run.model.eval()
    rows = []
    for name, builder in run.builders.items():
        dataset = builder.build(split)
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=builder.collate)
        real, swapped = build_metrics(config, name, run.task_infos[name]), build_metrics(config, name, run.task_infos[name])
        changed = total = 0
        for batch in loader:
            if batch.batch_size < 2:
                continue  # nothing to swap with
            outputs, other = model(batch), model(shuffled(batch))
            for metric in real:
                metric.update(batch, outputs)
            for metric in swapped:
                metric.update(batch, other)
            a, b = predictions(outputs), predictions(other)
            if a is not None:
                changed += int((a != b).sum())
                total += len(a)
        primary = real[0].primary if real else None
        score = lambda metrics: metrics[0].compute().get(primary) if metrics else None  # noqa: E731
        rows.append({"dataset": name, "metric": primary, "real": score(real), "shuffled": score(swapped),
                     "changed": 100.0 * changed / total if total else None})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="the save_dir of a finished (or checkpointed) run")
    parser.add_argument("--weights", default="best", help="best (default), last, or a checkpoint / safetensors path")
    parser.add_argument("--split", default="val")
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    torch.manual_seed(0)
    print("| dataset | metric | real | visual inputs shuffled | predictions changed |\n|---|---|---|---|---|")
    for row in probe(args.run, args.weights, args.split, args.batch_size):
        fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        print(f"| {row['dataset']} | {row['metric']} | {fmt(row['real'])} | {fmt(row['shuffled'])} | "
              f"{fmt(row['changed'])}% |")


if __name__ == "__main__":
    main()
