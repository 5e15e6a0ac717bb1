"""The VLMo paper's MoME ablation (its Table 5) at toy scale, on the Shapes world.

Trains the tiny VLMo from scratch with the Shapes recipe of one task, once per variant and seed,
and prints the validation metric as a Markdown table:

    mome        V-FFN / L-FFN experts, VL-FFN in the top layer (the model as built)
    shared_ffn  a standard Transformer: one FFN for every modality (model_config.vlmo.shared_ffn)
    no_vl_ffn   MoME without the VL-FFN (model_config.vlmo.vl_ffn_layers=0)

    python tools/bench/vlmo_ablation.py --task flickr30k_retrieval --updates 1500 --seeds 1 2
    python tools/bench/vlmo_ablation.py --task vqa2 --updates 3000 --image-size 64 --seeds 1

Retrieval runs the dual encoder only (image-only and text-only passes), which never touches the
VL-FFN: there `mome` and `no_vl_ffn` differ only by the random init of the other weights, so
their gap measures seed noise. Same recipe, data, batch, schedule and updates for every variant.
"""

from __future__ import annotations

import argparse

import torch
from seed_grid import add_grid_arguments, print_table, run_grid  # tools/bench sibling

from vlfw.config import load_config
from vlfw.runner import run

VARIANTS = {
    "mome": [],
    "shared_ffn": ["model_config.vlmo.shared_ffn=true"],
    "no_vl_ffn": ["model_config.vlmo.vl_ffn_layers=0"],
}
METRICS = {"vqa2": "vqa_accuracy", "flickr30k_retrieval": "r_mean", "coco_retrieval": "r_mean",
           "nlvr2": "accuracy"}


def train(task: str, variant: str, seed: int, args: argparse.Namespace, save_dir: str) -> dict[str, float]:
    overrides = [
        f"config=projects/vlmo/configs/{task}/shapes.yaml", f"dataset_config.{task}.shapes.size={args.size}",
        f"training.max_updates={args.updates}", f"training.eval_every={args.eval_every or args.updates}",
        f"training.checkpoint_every={args.updates}", "run_type=train_val", f"seed={seed}",
        "training.progress_bar=false", f"save_dir={save_dir}/{task}_{variant}_seed{seed}", *VARIANTS[variant],
    ]
    if args.image_size:
        overrides += [f"model_config.vlmo.image_size={args.image_size}",
                      f"dataset_config.{task}.processors.image.params.size={args.image_size}"]
    return run(load_config(overrides + list(args.override)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", choices=sorted(METRICS), default="flickr30k_retrieval")
    parser.add_argument("--size", default="default", help="Shapes world size")
    parser.add_argument("--updates", type=int, default=1500)
    parser.add_argument("--eval-every", type=int, default=0, help="0: evaluate once, at the end")
    parser.add_argument("--image-size", type=int, default=0, help="0: the recipe's (32 px)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    add_grid_arguments(parser, "further key=value config overrides for every run")
    args = parser.parse_args()
    key = f"val/{args.task}/{METRICS[args.task]}"
    results = run_grid(args, args.variants, key, "vlfw-vlmo-ablation-",
                       lambda variant, seed, save_dir: train(args.task, variant, seed, args, save_dir)[key])
    print(f"\nShapes `{args.size}` {args.task}, tiny VLMo from scratch, {args.updates} updates, "
          f"image {args.image_size or 'recipe'} px, val {METRICS[args.task]}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads\n")
    print_table("variant", results, args.seeds)

if __name__ == "__main__":
    main()
