"""Training speed of vlfw's VL-BERT against Hugging Face `transformers.VisualBertModel`.

Both models get the same sizes (hidden, layers, heads, intermediate = 4 x hidden), the same
inputs (`--text` tokens, `--regions` precomputed 2048-d region features; VL-BERT also reads
their boxes), the same classification head on the pooled output (vlfw's MLP classifier), the
same loss and the same optimizer (torch AdamW, default settings). Dropout is on in both (0.1,
BERT's). Each model is built once and warmed up; then `--rounds` rounds alternate the two
(A B, then B A, ...) with `--steps` training steps each, so slow drifts of the machine hit both
alike. Printed: steps/s per round, the median and best of each, and the ratio of the medians,
of the bests and the median of the per-round ratios (vlfw / HF, > 1 = vlfw faster).
CPU fp32 always; CUDA bf16 autocast as well when a GPU is present.
`--mode eval` times evaluation instead: both models in eval mode (no dropout), forward passes
(with the head and the loss) under torch.inference_mode, batches/s; `--mode both` runs both.

    python tools/bench/vlbert_speed.py --hidden 256 --layers 4 --heads 4 --batch 8 --steps 10 --rounds 7
    python tools/bench/vlbert_speed.py --hidden 256 --layers 4 --heads 4 --batch 8 --steps 10 --rounds 7 --mode eval
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from vlfw.data.batch import Batch
from vlfw.modules.heads import mlp_classifier
from vlfw.registry import MODELS
from vlfw.testing import task_info

NUM_CLASSES = 3


def make_inputs(batch: int, text: int, regions: int, feature: int, vocab: int, device: str):
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, vocab, (batch, text), generator=generator)
    ids[:, 0], ids[:, -1] = 101, 102
    xy = torch.rand(batch, regions, 2, generator=generator) * 400
    wh = torch.rand(batch, regions, 2, generator=generator) * 200 + 10
    boxes = torch.cat([xy, xy + wh], dim=-1)
    features = torch.randn(batch, regions, feature, generator=generator).relu()
    labels = torch.randint(0, NUM_CLASSES, (batch,), generator=generator)
    to = lambda t: t.to(device)  # noqa: E731
    return to(ids), to(boxes), to(features), to(labels)


def vlbert(args, device: str):
    cls = MODELS.get("vlbert")
    config = OmegaConf.merge(OmegaConf.create(cls.DEFAULT_CONFIG), {
        "size": "base", "hidden_size": args.hidden, "num_layers": args.layers, "num_heads": args.heads,
        "intermediate_size": 4 * args.hidden, "bert_init": "none", "region_feature_size": args.feature,
        "end_to_end": False})
    info = task_info("classification", "snli_ve", num_labels=NUM_CLASSES, visual="regions")
    model = cls(config, {"snli_ve": info}).to(device)
    ids, boxes, features, labels = make_inputs(args.batch, args.text, args.regions, args.feature, 30522, device)
    batch = Batch(input_ids=ids, attention_mask=torch.ones_like(ids, dtype=torch.bool), region_features=features,
                  region_boxes=boxes, region_mask=torch.ones(ids.shape[0], args.regions, dtype=torch.bool, device=device),
                  image_size=torch.tensor([[640.0, 480.0]], device=device).expand(ids.shape[0], -1),
                  dataset_name="snli_ve")
    return model, lambda: F.cross_entropy(model(batch)["logits"].float(), labels)


def visualbert(args, device: str):
    from transformers import VisualBertConfig, VisualBertModel

    config = VisualBertConfig(hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=args.heads,
                              intermediate_size=4 * args.hidden, visual_embedding_dim=args.feature)
    body = VisualBertModel(config).to(device)
    head = mlp_classifier(args.hidden, 2 * args.hidden, NUM_CLASSES).to(device)  # the head vlfw gives vlbert
    model = torch.nn.ModuleDict({"body": body, "head": head})
    ids, _, features, labels = make_inputs(args.batch, args.text, args.regions, args.feature, 30522, device)
    text_mask = torch.ones_like(ids)
    visual_mask = torch.ones(features.shape[:2], dtype=torch.long, device=device)

    def step():
        out = body(input_ids=ids, attention_mask=text_mask, visual_embeds=features, visual_attention_mask=visual_mask)
        return F.cross_entropy(head(out.pooler_output).float(), labels)

    return model, step


def trainer(build, args, device: str, dtype: torch.dtype | None) -> Callable[[int], tuple[float, float]]:
    """A model with its optimizer, warmed up; returns run(steps) -> (steps/s, ms per optimizer step)."""
    torch.manual_seed(0)
    model, loss_fn = build(args, device)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def one() -> float:
        with torch.autocast(device_type="cuda", dtype=dtype, enabled=dtype is not None):
            loss = loss_fn()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        sync()
        start = time.perf_counter()
        optimizer.step()
        sync()
        return time.perf_counter() - start

    def run(steps: int) -> tuple[float, float]:
        sync()
        start = time.perf_counter()
        in_optimizer = sum(one() for _ in range(steps))
        sync()
        return steps / (time.perf_counter() - start), 1000 * in_optimizer / max(steps, 1)

    run(args.warmup)
    return run


def evaluator(build, args, device: str, dtype: torch.dtype | None) -> Callable[[int], tuple[float, float]]:
    """A model in eval mode, warmed up; returns run(steps) -> (forward passes/s, 0.0)."""
    torch.manual_seed(0)
    model, loss_fn = build(args, device)
    model.eval()
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def run(steps: int) -> tuple[float, float]:
        sync()
        start = time.perf_counter()
        with torch.inference_mode(), torch.autocast(device_type="cuda", dtype=dtype, enabled=dtype is not None):
            for _ in range(steps):
                loss_fn()
        sync()
        return steps / (time.perf_counter() - start), 0.0

    run(args.warmup)
    return run


def compare(args, device: str, dtype: torch.dtype | None,
            mode: str = "train") -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    make = trainer if mode == "train" else evaluator
    runs = {"vlbert": make(vlbert, args, device, dtype), "visualbert": make(visualbert, args, device, dtype)}
    rates: dict[str, list[float]] = {"vlbert": [], "visualbert": []}
    optimizer_ms: dict[str, list[float]] = {"vlbert": [], "visualbert": []}
    for round_index in range(args.rounds):
        order = ["vlbert", "visualbert"] if round_index % 2 == 0 else ["visualbert", "vlbert"]
        for name in order:
            rate, ms = runs[name](args.steps)
            rates[name].append(rate)
            optimizer_ms[name].append(ms)
        print(f"  round {round_index + 1}: vlbert {rates['vlbert'][-1]:.3f}  visualbert {rates['visualbert'][-1]:.3f}  "
              f"ratio {rates['vlbert'][-1] / rates['visualbert'][-1]:.3f}", flush=True)
    return rates, optimizer_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--text", type=int, default=40)
    parser.add_argument("--regions", type=int, default=36)
    parser.add_argument("--feature", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5, help="training steps per model and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--cpu-only", action="store_true")
    parser.add_argument("--mode", choices=("train", "eval", "both"), default="train",
                        help="time training steps, evaluation forward passes (inference_mode), or both")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = [("cpu", "fp32", None)]
    if torch.cuda.is_available() and not args.cpu_only:
        settings.append(("cuda", "bf16", torch.bfloat16))
    print(f"hidden={args.hidden} layers={args.layers} heads={args.heads} text={args.text} regions={args.regions} "
          f"feature={args.feature} batch={args.batch} steps={args.steps} rounds={args.rounds} warmup={args.warmup} "
          f"threads={torch.get_num_threads()} torch={torch.__version__} load average before={os.getloadavg()}")
    modes = ("train", "eval") if args.mode == "both" else (args.mode,)
    for (device, name, dtype), mode in ((setting, mode) for setting in settings for mode in modes):
        unit = "steps/s" if mode == "train" else "batches/s (eval)"
        print(f"{device} {name} {mode}:")
        rates, optimizer_ms = compare(args, device, dtype, mode)
        ours, theirs = rates["vlbert"], rates["visualbert"]
        paired = statistics.median(a / b for a, b in zip(ours, theirs))
        print(f"{device:5} {name:5} {mode:5} vlfw vlbert {unit} median {statistics.median(ours):.3f} best {max(ours):.3f} | "
              f"HF VisualBert median {statistics.median(theirs):.3f} best {max(theirs):.3f} | ratio of medians "
              f"{statistics.median(ours) / statistics.median(theirs):.3f}, of bests {max(ours) / max(theirs):.3f}, "
              f"median per-round {paired:.3f}")
        if mode == "eval":
            continue
        # forward + backward alone: the step time less the optimizer's
        rest = {n: [1000 / r - o for r, o in zip(rates[n], optimizer_ms[n])] for n in rates}
        print(f"      ms per step in AdamW.step (median): vlbert {statistics.median(optimizer_ms['vlbert']):.1f}, "
              f"visualbert {statistics.median(optimizer_ms['visualbert']):.1f}; forward+backward ms (median): "
              f"vlbert {statistics.median(rest['vlbert']):.1f}, visualbert {statistics.median(rest['visualbert']):.1f}, "
              f"ratio {statistics.median(rest['visualbert']) / statistics.median(rest['vlbert']):.3f}")
    print(f"load average after={os.getloadavg()}")


if __name__ == "__main__":
    main()
