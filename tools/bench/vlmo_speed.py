"""VLMo fusion pass vs Hugging Face ViLT at equal size and inputs: training steps per second.

Both models get the same batch (images with the same patch count, 40 text tokens), the same
loss (a 2-way linear head on the pooled [CLS] + cross-entropy) and AdamW, in one process:
warm-up steps first, then interleaved rounds (the order alternates per round) so both see the
same machine load. Reports each model's median and best steps/s and the vlmo/vilt ratio (median
of the per-round ratios, best/best, median/median), and the floating-point operations of one
training step as counted by `torch.utils.flop_counter` (what each model executes: VLMo's
[CLS]-only last layer counts less). On a GPU (`--device cuda --dtype bf16`: autocast bf16,
weights and optimizer fp32) it also reports MFU, achieved FLOP/s over the chip's dense bf16 peak
(known chips by name, or `--peak-tflops`). `--mode eval` times evaluation instead (both models in
eval mode, the forward pass and head under torch.inference_mode, batches/s); `--mode both` runs
the training rounds, then the evaluation rounds.

    python tools/bench/vlmo_speed.py --layers 4 --hidden 256 --heads 4 --image-size 96 --batch 8
    python tools/bench/vlmo_speed.py --device cuda --dtype bf16 --layers 12 --hidden 768 --heads 12 \
        --image-size 384 --batch 32 --steps 10 --warmup 5 --rounds 10
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

# dense bf16 tensor-core peak, TFLOP/s (vendor data sheets), matched against the device name
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 70.0}


def build_vlmo(args):
    from vlfw.testing import task_info
    from vlfw_vlmo.model import VLMo

    config = {"size": "tiny", "num_layers": args.layers, "hidden_size": args.hidden, "num_heads": args.heads,
              "ffn_size": 4 * args.hidden, "vl_ffn_layers": args.vl_ffn_layers, "image_size": args.image_size,
              "patch_size": args.patch, "max_text_length": args.text_length, "drop_path_rate": 0.0}
    model = VLMo(config, {"vqa2": task_info("vqa", "vqa2", num_answers=2, visual="images")}).train()
    return model, lambda batch: model.itm_logits(batch["pixel_values"], batch["input_ids"], batch["attention_mask"])


def build_vilt(args):
    from transformers import ViltConfig, ViltModel

    config = ViltConfig(hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=args.heads,
                        intermediate_size=4 * args.hidden, image_size=args.image_size, patch_size=args.patch,
                        max_position_embeddings=args.text_length, max_image_length=-1,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = ViltModel(config, add_pooling_layer=True).train()
    head = torch.nn.Linear(args.hidden, 2)
    model.bench_head = head

    def forward(batch):
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    pixel_values=batch["pixel_values"], pixel_mask=batch["pixel_mask"])
        return head(out.pooler_output)
    return model, forward


def make_stepper(forward, model, batch, labels, autocast_dtype: torch.dtype | None):
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    device_type = labels.device.type

    sync = torch.cuda.synchronize if device_type == "cuda" else (lambda: None)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            loss = F.cross_entropy(forward(batch).float(), labels)
        loss.backward()
        sync()
        start = time.perf_counter()
        optimizer.step()
        sync()
        step.optimizer_seconds.append(time.perf_counter() - start)
    step.optimizer_seconds = []
    return step


def make_evaluator(forward, model, batch, autocast_dtype: torch.dtype | None):
    device_type = batch["input_ids"].device.type

    def step():
        model.eval()
        with torch.inference_mode(), torch.autocast(device_type, dtype=autocast_dtype or torch.float32,
                                                    enabled=autocast_dtype is not None):
            forward(batch)
    return step


def step_flops(step) -> int:
    """Floating-point operations of one training step (forward, backward; matmul-class ops)."""
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return counter.get_total_flops()


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for chip, peak in PEAK_BF16_TFLOPS.items() if chip in name), None)


def timed(step, steps: int, clock, device: torch.device) -> float:
    """Steps per second over `steps` consecutive training steps."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = clock()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps / (clock() - start)


def describe(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--vl-ffn-layers", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--patch", type=int, default=16)
    parser.add_argument("--text-length", type=int, default=40)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4, help="timed training steps per model per round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per model before the first round")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds (order alternates)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: process CPU time (less sensitive to other jobs; use with --threads 1)")
    parser.add_argument("--mode", choices=("train", "eval", "both"), default="train",
                        help="time training steps, evaluation forward passes (inference_mode), or both")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:index]")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32",
                        help="bf16: autocast to bfloat16 (fp32 weights and optimizer state)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's dense peak for --dtype, TFLOP/s (default: known GPUs by name)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    if args.clock == "cpu" and device.type != "cpu":
        parser.error("--clock cpu measures host CPU time: use it with --device cpu")
    torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    autocast_dtype = torch.bfloat16 if args.dtype == "bf16" else None
    torch.manual_seed(0)
    batch = {
        "input_ids": torch.randint(1000, 3000, (args.batch, args.text_length)),
        "attention_mask": torch.ones(args.batch, args.text_length, dtype=torch.long),
        "pixel_values": torch.randn(args.batch, 3, args.image_size, args.image_size),
        "pixel_mask": torch.ones(args.batch, args.image_size, args.image_size, dtype=torch.long),
    }
    batch = {key: value.to(device) for key, value in batch.items()}
    labels = torch.randint(0, 2, (args.batch,), device=device)
    models = {"vlmo": build_vlmo(args), "vilt": build_vilt(args)}
    for model, _ in models.values():
        model.to(device)
    modes = ("train", "eval") if args.mode == "both" else (args.mode,)
    for mode in modes:
        if mode == "train":
            steppers = {name: make_stepper(forward, model, batch, labels, autocast_dtype)
                        for name, (model, forward) in models.items()}
        else:
            steppers = {name: make_evaluator(forward, model, batch, autocast_dtype)
                        for name, (model, forward) in models.items()}
        measure(args, mode, models, steppers, clock, device)


def measure(args, mode: str, models, steppers, clock, device: torch.device) -> None:
    load_before = load_average()
    for step in steppers.values():  # first-call allocations and optimizer state, not timed
        for _ in range(args.warmup):
            step()
    flops = {name: step_flops(step) for name, step in steppers.items()}
    peak = peak_tflops(device, args.peak_tflops)
    rates: dict[str, list[float]] = {name: [] for name in models}
    names = list(models)
    for round_index in range(args.rounds):
        # alternate who goes first, so neither model always runs right after the other
        for name in (names if round_index % 2 == 0 else names[::-1]):
            rates[name].append(timed(steppers[name], args.steps, clock, device))
    patches = (args.image_size // args.patch) ** 2
    print(f"layers={args.layers} hidden={args.hidden} heads={args.heads} vl_ffn_layers={args.vl_ffn_layers} "
          f"batch={args.batch} patches={patches} text_tokens={args.text_length} threads={args.threads} "
          f"clock={args.clock} steps/round={args.steps} rounds={args.rounds} "
          f"({describe(device)} {args.dtype}, torch {torch.__version__})")
    print(f"{mode}: load average before: {load_before}  after: {load_average()}")
    unit = "train steps/s" if mode == "train" else "eval batches/s"
    for name, (model, _) in models.items():
        params = sum(p.numel() for p in model.parameters()) / 1e6
        median = statistics.median(rates[name])
        achieved = flops[name] * median / 1e12
        mfu = f"  MFU {100 * achieved / peak:.1f}% of {peak:g}" if peak else ""
        print(f"{name:5s} params={params:6.1f}M  {unit}: median {median:.3f}  "
              f"best {max(rates[name]):.3f}  GFLOP/step {flops[name] / 1e9:.2f}  "
              f"TFLOP/s {achieved:.3g}{mfu}  all {[round(r, 3) for r in rates[name]]}")
    if mode == "train":  # wall time in AdamW.step, the same code for both (untimed steps included)
        print("ms per step in AdamW.step (median): " + ", ".join(
            f"{name} {1000 * statistics.median(step.optimizer_seconds):.1f}" for name, step in steppers.items()))
    per_round = [a / b for a, b in zip(rates["vlmo"], rates["vilt"])]
    print(f"{mode} vlmo/vilt speed ratio: median of per-round ratios {statistics.median(per_round):.3f}  "
          f"best/best {max(rates['vlmo']) / max(rates['vilt']):.3f}  "
          f"median/median {statistics.median(rates['vlmo']) / statistics.median(rates['vilt']):.3f}  "
          f"per round {[round(r, 3) for r in per_round]}")


if __name__ == "__main__":
    main()
