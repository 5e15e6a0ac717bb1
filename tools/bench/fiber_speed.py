"""FIBER training speed per mode vs the two plain library backbones it wraps, at equal size and inputs.

Modes, each one AdamW training step on the same batch (images, 40 text tokens):
  backbones  torchvision's SwinTransformer + transformers' BertModel side by side (no fusion), a 2-way
             linear head on concat(mean image token, first text token): the cost FIBER starts from
  dual       FIBER's dual encoder (ITC with the learned temperature): the same backbones, wrapped
  fused      FIBER's fused encoder (the top K layers cross-attend both ways) + the ITM head
  caption    FIBER's captioning decoder (image through Swin, causal text cross-attending), LM loss
Warm-up steps first, then interleaved rounds (the order rotates per round). Reports median and best
steps/s per mode, the ratio to `backbones`, and the floating-point operations of one step
(torch.utils.flop_counter).

    python tools/bench/fiber_speed.py --size tiny --image-size 64 --batch 8
    python tools/bench/fiber_speed.py --size small --text-init random --image-size 224 --batch 4 --rounds 3
    python tools/bench/fiber_speed.py --device cuda --dtype bf16 --size base --image-size 384 --batch 32
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from vlfw.data.batch import Batch
from vlfw.losses.contrastive import image_text_contrastive
from vlfw.testing import task_info


def build_fiber(args, device):
    from vlfw_fiber.model import FIBER

    tasks = {"cc3m": task_info("pretraining", "cc3m", visual="images"),
             "coco_captioning": task_info("captioning", "coco_captioning", visual="images")}
    config = {"size": args.size, "drop_path_rate": 0.0, "dropout": 0.0, "text_init": args.text_init}
    if args.fusion_layers is not None:
        config["fusion_layers"] = args.fusion_layers
    return FIBER(config, tasks).to(device).train()


def build_backbones(model, device):
    """Plain torchvision Swin + BertModel of the FIBER model's sizes (fresh weights)."""
    from torchvision.models.swin_transformer import SwinTransformer
    from transformers import BertConfig, BertModel

    s = model.sizes
    swin = SwinTransformer(patch_size=[s["patch_size"]] * 2, embed_dim=s["embed_dim"], depths=s["depths"],
                           num_heads=s["image_heads"], window_size=[s["window_size"]] * 2, stochastic_depth_prob=0.0,
                           num_classes=1)
    bert = BertModel(BertConfig(hidden_size=s["text_hidden"], num_hidden_layers=s["text_layers"],
                                num_attention_heads=s["text_heads"], intermediate_size=s["text_ffn"],
                                hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                                attn_implementation="sdpa"), add_pooling_layer=False)
    head = torch.nn.Linear(swin.norm.normalized_shape[0] + s["text_hidden"], 2)
    modules = torch.nn.ModuleList([swin, bert, head]).to(device).train()

    def loss(batch, labels):
        image = swin.norm(swin.features(batch.image)).flatten(1, 2).mean(dim=1)
        text = bert(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state[:, 0]
        return F.cross_entropy(head(torch.cat([image, text], dim=-1)).float(), labels)
    return modules, loss


def fiber_losses(model):
    def dual(batch, labels):
        return image_text_contrastive(model.image_embedding(batch.image),
                                      model.text_embedding(batch.input_ids, batch.attention_mask),
                                      model.logit_scale(), max_logit_scale=1000.0).loss

    def fused(batch, labels):
        return F.cross_entropy(model.itm_logits(batch.image, batch.input_ids, batch.attention_mask).float(), labels)

    def caption(batch, labels):
        logits = model.caption_logits(batch)["caption_logits"][:, :-1].float()
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch.input_ids[:, 1:].reshape(-1))
    return {"dual": dual, "fused": fused, "caption": caption}


def make_step(module, loss, batch, labels, dtype):
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-5)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(labels.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            value = loss(batch, labels)
        value.backward()
        optimizer.step()
    return step


def timed(step, steps, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="tiny", choices=("tiny", "small", "base", "large"))
    parser.add_argument("--text-init", default="random", choices=("random", "bert", "auto"))
    parser.add_argument("--fusion-layers", type=int, default=None)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--text-length", type=int, default=40)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per mode per round")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.dtype == "bf16" else None
    torch.manual_seed(0)
    ids = torch.randint(1000, 3000, (args.batch, args.text_length))
    ids[:, 0], ids[:, -1] = 101, 102
    batch = Batch(image=torch.randn(args.batch, 3, args.image_size, args.image_size), input_ids=ids,
                  attention_mask=torch.ones_like(ids)).to(device)
    batch.dataset_name = "coco_captioning"
    model = build_fiber(args, device)
    backbones, backbone_loss = build_backbones(model, device)
    labels = torch.randint(0, 2, (args.batch,), device=device)
    steps = {"backbones": make_step(backbones, backbone_loss, batch, labels, dtype)}
    steps.update({name: make_step(model, loss, batch, labels, dtype) for name, loss in fiber_losses(model).items()})
    for step in steps.values():
        for _ in range(args.warmup):
            step()
    flops = {}
    for name, step in steps.items():
        counter = FlopCounterMode(display=False)
        with counter:
            step()
        flops[name] = counter.get_total_flops()
    rates = {name: [] for name in steps}
    names = list(steps)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            rates[name].append(timed(steps[name], args.steps, device))
    base = statistics.median(rates["backbones"])
    print(f"size={args.size} fusion_layers={model.fusion_layers} image={args.image_size}px text={args.text_length} "
          f"batch={args.batch} threads={args.threads} rounds={args.rounds}x{args.steps} "
          f"({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'} {args.dtype}, torch {torch.__version__})")
    print("| mode | steps/s median | best | vs backbones | GFLOP/step |\n|---|---|---|---|---|")
    for name in names:
        median = statistics.median(rates[name])
        print(f"| {name} | {median:.3f} | {max(rates[name]):.3f} | {median / base:.2f} | {flops[name] / 1e9:.2f} |")


if __name__ == "__main__":
    main()
