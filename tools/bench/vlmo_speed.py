"""VLMo fusion pass vs Hugging Face ViLT at equal size and inputs: training steps per second.

Both models get the same batch (images with the same patch count, 40 text tokens), the same
loss (a 2-way linear head on the pooled [CLS] + cross-entropy) and AdamW, in one process,
timed alternately so both see the same machine load. CPU fp32 by default.

    python tools/bench/vlmo_speed.py --layers 6 --hidden 384 --heads 6 --image-size 96 --batch 8
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F


def build_vlmo(args):
    from vlfw_vlmo.model import VLMo

    config = {"size": "tiny", "num_layers": args.layers, "hidden_size": args.hidden, "num_heads": args.heads,
              "ffn_size": 4 * args.hidden, "vl_ffn_layers": args.vl_ffn_layers, "image_size": args.image_size,
              "patch_size": args.patch, "max_text_length": args.text_length, "drop_path_rate": 0.0}
    model = VLMo(config, {"vqa2": {"task": "vqa", "num_answers": 2}}).train()
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


def time_steps(forward, model, batch, labels, steps: int, warmup: int) -> float:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def step():
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(forward(batch), labels).backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - start)


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
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="alternating timing rounds per model")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    batch = {
        "input_ids": torch.randint(1000, 3000, (args.batch, args.text_length)),
        "attention_mask": torch.ones(args.batch, args.text_length, dtype=torch.long),
        "pixel_values": torch.randn(args.batch, 3, args.image_size, args.image_size),
        "pixel_mask": torch.ones(args.batch, args.image_size, args.image_size, dtype=torch.long),
    }
    labels = torch.randint(0, 2, (args.batch,))
    models = {"vlmo": build_vlmo(args), "vilt": build_vilt(args)}
    rates: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, (model, forward) in models.items():
            rates[name].append(time_steps(forward, model, batch, labels, args.steps, args.warmup))
    patches = (args.image_size // args.patch) ** 2
    print(f"layers={args.layers} hidden={args.hidden} heads={args.heads} batch={args.batch} "
          f"patches={patches} text_tokens={args.text_length} threads={args.threads} (CPU fp32)")
    for name, (model, _) in models.items():
        params = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"{name:5s} params={params:6.1f}M  train steps/s: best {max(rates[name]):.3f}  "
              f"all {[round(r, 3) for r in rates[name]]}")


if __name__ == "__main__":
    main()
