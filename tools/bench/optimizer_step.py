"""The optimizer step alone, per `optimizer.implementation`, side by side in one process.

    python tools/bench/optimizer_step.py [--threads 1] [--steps 50] [--rounds 3]

The parameters are those of real vlfw models as the recipes build them (the quickstart's
attention_fusion and the tiny VL-BERT, both with the 30,522-word BERT vocabulary: the word
embeddings are most of the parameters) with random gradients; every implementation steps the
same parameters in interleaved rounds, and the table gives the median milliseconds per step and
the ratio to the per-tensor loop, which torch picks by default on the CPU.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from omegaconf import OmegaConf

from vlfw.registry import MODELS
from vlfw.runner.optim import build_optimizer
from vlfw.testing import task_info

IMPLEMENTATIONS = ("for_loop", "foreach", "fused")
TASKS = {"vqa2": {"task": "vqa", "num_answers": 100}, "nlvr2": {"task": "nlvr2", "num_labels": 2},
         "snli_ve": {"task": "classification", "num_labels": 3}, "refcoco_plus": {"task": "rec"}}
MODELS_TO_TIME = {
    "attention_fusion (quickstart)": ("attention_fusion", {"hidden_size": 128, "text_layers": 0, "context_layers": 0,
                                                           "region_mlp": 1, "count_glimpses": 4, "vocab_size": 30522}),
    "vlbert tiny": ("vlbert", {"size": "tiny"}),
}


def model_parameters(name: str, config: dict) -> torch.nn.Module:
    infos = {d: task_info(dataset=d, visual="regions", region_feature_size=256, **f) for d, f in TASKS.items()}
    model = MODELS.get(name)(config, infos)
    for parameter in model.parameters():
        parameter.grad = torch.randn_like(parameter)
    return model


def time_steps(model: torch.nn.Module, implementation: str, steps: int) -> float:
    config = OmegaConf.create({"type": "adamw", "lr": 1e-4, "weight_decay": 0.01, "betas": [0.9, 0.999],
                               "eps": 1e-8, "no_decay": ["bias", "norm"], "lr_multipliers": {},
                               "implementation": implementation})
    optimizer = build_optimizer(model, config)
    for _ in range(3):
        optimizer.step()
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.step()
    return (time.perf_counter() - start) / steps * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.steps} steps x {args.rounds} rounds, CPU")
    print("| model | parameters | " + " | ".join(f"{i} ms/step" for i in IMPLEMENTATIONS) + " | fused / for_loop |")
    print("|---|---|" + "---|" * (len(IMPLEMENTATIONS) + 1))
    for label, (name, config) in MODELS_TO_TIME.items():
        model = model_parameters(name, config)
        times = {i: [] for i in IMPLEMENTATIONS}
        for _ in range(args.rounds):
            for implementation in IMPLEMENTATIONS:
                times[implementation].append(time_steps(model, implementation, args.steps))
        median = {i: statistics.median(t) for i, t in times.items()}
        count = sum(p.numel() for p in model.parameters())
        print(f"| {label} | {count / 1e6:.2f} M | " + " | ".join(f"{median[i]:.1f}" for i in IMPLEMENTATIONS)
              + f" | {median['fused'] / median['for_loop']:.2f} |")


if __name__ == "__main__":
    main()
