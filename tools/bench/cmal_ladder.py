"""The CMAL paper's Table 3 as a ladder on the Shapes world: pre-training objectives added one at a time.

Each rung pre-trains the tiny CMAL on the Shapes COCO captions with the objectives of its row
(`projects/cmal/configs/pretrain/shapes.yaml` restricted to those objectives), then fine-tunes one
downstream recipe from that checkpoint; rung `none` fine-tunes from random weights. Same data,
schedule, batch, seed and number of updates on every rung. The objectives of a rung share the
updates equally (`--ratios equal`, the paper: "all the pre-training tasks are assigned the same
weight in the ablation experiments"), or in the recipe's gamma proportions (`--ratios gamma`).

    none  ->  itm  ->  +mlm  ->  +mrm  ->  +vtc  ->  +amc (all five, the full model)

    python tools/bench/cmal_ladder.py --task snli_ve --pretrain-updates 2000 --updates 2000 --seeds 1
    python tools/bench/cmal_ladder.py --task vqa --rungs none all --seeds 1 2 3

Each rung's pre-training config is written next to its run (`<save-dir>/<rung>_seed<s>/pretrain.yaml`);
a later ladder on another task with the same --save-dir, rungs, seeds and pre-training settings reuses
those checkpoints instead of pre-training again.
Prints one line per run and a Markdown table of the final validation metric.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from omegaconf import OmegaConf
from seed_grid import add_grid_arguments, print_table, run_grid  # tools/bench sibling

from vlfw.config import load_config
from vlfw.config.loader import load_project_file
from vlfw.runner import run

PRETRAIN = "projects/cmal/configs/pretrain/shapes.yaml"
LADDER = ["itm", "mlm", "mrm", "vtc", "amc"]  # the paper's Table 3 order
RUNGS = {"none": []} | {("all" if k == len(LADDER) else "+".join(LADDER[:k])): LADDER[:k]
                       for k in range(1, len(LADDER) + 1)}
TASKS = {"vqa": ("vqa2", "vqa_accuracy"), "nlvr2": ("nlvr2", "accuracy"), "snli_ve": ("snli_ve", "accuracy"),
         "refcoco_plus": ("refcoco_plus", "acc@0.5")}


def pretrain_config(objectives: list[str], ratios: str, path: Path) -> Path:
    """The Shapes pre-training recipe restricted to `objectives` (equal shares or their gamma), written to `path`."""
    recipe = load_project_file(PRETRAIN)
    names = [f"cmal_{o}" for o in objectives]
    recipe.datasets = names
    recipe.dataset_config = {n: recipe.dataset_config[n] for n in names}
    recipe.multitask.ratios = {n: 1.0 if ratios == "equal" else recipe.multitask.ratios[n] for n in names}
    recipe.model_config = OmegaConf.merge(recipe.get("model_config") or {},
                                          {"cmal": {"pretraining": {o: o in objectives for o in LADDER}}})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(OmegaConf.to_yaml(recipe), encoding="utf-8")
    return path


def rung(name: str, seed: int, args: argparse.Namespace, root: Path) -> float:
    where = root / f"{name.replace('+', '_')}_seed{seed}"
    pretrained = "null"
    if RUNGS[name]:
        checkpoint = where / "pretrain" / "checkpoints" / f"update_{args.pretrain_updates}.pt"
        config = pretrain_config(RUNGS[name], args.ratios, where / "pretrain.new.yaml")
        previous = where / "pretrain.yaml"
        if checkpoint.exists() and previous.exists() and previous.read_text() == config.read_text():
            # another task's ladder in the same --save-dir pre-trained this rung already
            print(f"{name} seed {seed}: reusing the pre-training {checkpoint}", flush=True)
        else:
            run(load_config([f"config={config}", f"training.max_updates={args.pretrain_updates}",
                             f"training.checkpoint_every={args.pretrain_updates}", f"seed={seed}",
                             "training.progress_bar=false", f"save_dir={where}/pretrain"]))
        config.replace(previous)
        pretrained = str(checkpoint)
    dataset, metric = TASKS[args.task]
    metrics = run(load_config([
        f"config=projects/cmal/configs/{args.task}/shapes.yaml", f"checkpoint.pretrained={pretrained}",
        f"training.max_updates={args.updates}", f"training.eval_every={args.updates}",
        f"training.checkpoint_every={args.updates}", "run_type=train_val", f"seed={seed}",
        "training.progress_bar=false", f"save_dir={where}/{args.task}", *args.override]))
    return float(metrics[f"val/{dataset}/{metric}"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", choices=sorted(TASKS), default="snli_ve")
    parser.add_argument("--rungs", nargs="+", choices=list(RUNGS), default=list(RUNGS))
    parser.add_argument("--pretrain-updates", type=int, default=2000)
    parser.add_argument("--updates", type=int, default=2000, help="fine-tuning updates")
    parser.add_argument("--ratios", choices=["equal", "gamma"], default="equal",
                        help="how a rung's objectives share the pre-training updates")
    add_grid_arguments(parser, "further key=value overrides for every fine-tuning run")
    args = parser.parse_args()
    results = run_grid(args, args.rungs, f"val {args.task}", "vlfw-cmal-ladder-",
                       lambda name, seed, save_dir: rung(name, seed, args, Path(save_dir)))
    print(f"\nCMAL tiny, Shapes, pre-training {args.pretrain_updates} updates ({args.ratios} shares), {args.task} fine-tuning "
          f"{args.updates} updates, val; torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print_table("pre-training objectives", results, args.seeds)

if __name__ == "__main__":
    main()
