"""CMAL training speed per pre-training objective, and the cost of scanning anchors one at a time.

Each mode is one AdamW step of the `cmal` model on the same synthetic batch (B samples, N regions,
L tokens, A anchors per sample at distinct words and regions): amc (one hybrid sequence per scanned
anchor: B * min(A, max_anchors_per_sample) sequences through CMAI), amc_one (cmap.scan=one: B
sequences), mlm, mrm, itm, vtc (UMSE only) and all (the five in one step, the loss-weights reading).
Warm-up steps first, then interleaved rounds. Reports median and best steps/s per mode and the
number of hybrid sequences CMAI ran.

    python tools/bench/cmal_speed.py --size tiny --batch 32
    python tools/bench/cmal_speed.py --size small --batch 16 --rounds 3
    python tools/bench/cmal_speed.py --device cuda --size base --batch 64
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from vlfw.data.batch import Batch
from vlfw.tasks import TaskInfo
from vlfw.testing import bert_text_info

MODES = ("amc", "amc_one", "mlm", "mrm", "itm", "vtc", "all")


def synthetic_batch(args, generator: torch.Generator) -> Batch:
    b, n, length, a, classes = args.batch, args.regions, args.length, args.anchors, args.classes
    if a > min(n, length - 2):
        raise SystemExit(f"--anchors {a} needs at least as many regions and words")
    ids = torch.randint(1000, 30000, (b, length), generator=generator)
    ids[:, 0], ids[:, -1] = 101, 102
    probs = torch.rand(b, n, classes, generator=generator).softmax(-1)
    regions = torch.stack([torch.randperm(n, generator=generator)[:a] for _ in range(b)])
    tokens = torch.stack([1 + torch.randperm(length - 2, generator=generator)[:a] for _ in range(b)])
    token_mask = torch.zeros(b, a, length, dtype=torch.bool)
    token_mask.scatter_(2, tokens[..., None], True)
    labels = torch.full((b, length), -100)
    chosen = torch.rand(b, length, generator=generator) < 0.15
    chosen[:, 0] = chosen[:, -1] = False
    labels[chosen] = ids[chosen]
    xy = torch.rand(b, n, 2, generator=generator) * 300
    boxes = torch.cat([xy, xy + 10 + torch.rand(b, n, 2, generator=generator) * 300], dim=-1)
    return Batch({
        "dataset_name": "cmal_pretraining", "index": list(range(b)), "image_id": list(range(b)),
        "input_ids": ids, "attention_mask": torch.ones(b, length, dtype=torch.bool),
        "mlm_input_ids": torch.where(chosen, torch.full_like(ids, 103), ids), "mlm_labels": labels,
        "region_features": torch.rand(b, n, args.feature_size, generator=generator), "region_boxes": boxes,
        "region_mask": torch.ones(b, n, dtype=torch.bool), "image_size": torch.full((b, 2), 640.0),
        "region_class_probs": probs, "mrm_regions": torch.rand(b, n, generator=generator) < 0.15,
        "anchor_region_index": regions, "anchor_token_index": tokens, "anchor_token_mask": token_mask,
        "anchor_mask": torch.ones(b, a, dtype=torch.bool),
    })


def build(args, device, mode: str):
    from vlfw_cmal.model import CMAL

    info = TaskInfo(task="pretraining", dataset="cmal_pretraining", visual="regions", text=bert_text_info(),
                    region_feature_size=args.feature_size, detector_classes=args.classes)
    config = {"size": args.size, "dropout": 0.0, "bert_init": "none",
              "cmap": {"scan": "one" if mode == "amc_one" else "each", "max_anchors_per_sample": args.max_anchors}}
    model = CMAL(config, {"cmal_pretraining": info}).to(device).train()
    objective = "amc" if mode == "amc_one" else mode
    if objective != "all":
        model.dataset_objectives["cmal_pretraining"] = (objective,)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="tiny", choices=("tiny", "small", "base", "large"))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--regions", type=int, default=36)
    parser.add_argument("--length", type=int, default=30)
    parser.add_argument("--anchors", type=int, default=3)
    parser.add_argument("--max-anchors", type=int, default=8)
    parser.add_argument("--classes", type=int, default=1601)
    parser.add_argument("--feature-size", type=int, default=2048)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    batch = synthetic_batch(args, torch.Generator().manual_seed(0)).to(device)
    runs = {}
    for mode in args.modes:
        model = build(args, device, mode)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        sequences = []
        original = model.cmai.forward

        def counting(embeddings, mask, original=original, sequences=sequences):
            sequences.append(int(embeddings.shape[0]))
            return original(embeddings, mask)

        model.cmai.forward = counting
        runs[mode] = (model, optimizer, sequences)

    def step(mode: str) -> None:
        model, optimizer, _ = runs[mode]
        loss = sum(model(batch).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for mode in args.modes:
        for _ in range(args.warmup):
            step(mode)
    rates: dict[str, list[float]] = {m: [] for m in args.modes}
    for round_index in range(args.rounds):
        order = args.modes[round_index % len(args.modes):] + args.modes[:round_index % len(args.modes)]
        for mode in order:
            runs[mode][2].clear()
            sync()
            start = time.perf_counter()
            for _ in range(args.steps):
                step(mode)
            sync()
            rates[mode].append(args.steps / (time.perf_counter() - start))
    print(f"size {args.size}, batch {args.batch}, {args.regions} regions, {args.length} tokens, {args.anchors} anchors "
          f"per sample, device {args.device}, {args.threads} thread(s)")
    print(f"{'mode':<8} {'median steps/s':>15} {'best':>8} {'CMAI sequences per step':>25}")
    for mode in args.modes:
        sequences = runs[mode][2]
        per_step = sum(sequences) / max(1, args.steps)
        print(f"{mode:<8} {statistics.median(rates[mode]):>15.2f} {max(rates[mode]):>8.2f} {per_step:>25.0f}")


if __name__ == "__main__":
    main()
