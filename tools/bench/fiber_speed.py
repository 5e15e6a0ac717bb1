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

--decode instead times caption decoding (eval mode, no gradients) of one batch of images with the same
weights three ways, all through `vlfw.generation.generate` (beam search, length-normalised):
  cached     FIBER's own generation_step: every layer's self-attention keys/values are kept and only
             the newest token runs through the decoder
  recompute  a thin wrapper over the same model whose "cache" is the token prefix itself: every step
             reruns the decoder over the whole prefix and keeps the last position's logits (what the
             released FIBER code does); the image's cross-attention keys/values are computed once per
             batch in all modes (generation_context)
  recompute_last  the same, with the LM head on the last position only (the fairest no-cache decoder)
It checks that all three return the same token ids, and reports seconds per batch (median of interleaved
rounds, the order rotating per round), the ratio to `cached`, and the floating-point operations of one batch.

    python tools/bench/fiber_speed.py --size tiny --image-size 64 --batch 8
    python tools/bench/fiber_speed.py --size small --text-init random --image-size 224 --batch 4 --rounds 3
    python tools/bench/fiber_speed.py --device cuda --dtype bf16 --size base --image-size 384 --batch 32
    python tools/bench/fiber_speed.py --decode --size tiny --image-size 64 --batch 8 --beams 5 --max-length 20 --gate 1
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


class RecomputingDecoder:
    """FIBER's generation interface without a KV cache: the cache is the token prefix, and every step runs
    the decoder over the whole prefix (as plugins/fiber/tests/test_fiber_generation.py builds its reference)."""

    def __init__(self, model, last_only: bool = False):
        self.model = model
        self.task_infos = model.task_infos
        self.last_only = last_only  # run the LM head on the last position only (else on every position)

    def parameters(self):
        return self.model.parameters()

    def generation_context(self, batch):
        return self.model.generation_context(batch)

    def generation_step(self, input_ids, context, cache):
        prefix = input_ids if cache is None else torch.cat([cache, input_ids], dim=1)
        memory = [(context[f"keys.{i}"], context[f"values.{i}"]) if f"keys.{i}" in context else None
                  for i in range(self.model.encoder.text.num_layers)]
        length = prefix.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=prefix.device).tril()[None, None]
        if not self.last_only:
            logits, _ = self.model.decode(prefix, 0, causal, memory, None)
            return logits[:, -1], prefix
        x = self.model.encoder.text.embed(prefix, 0)  # FIBER.decode, its LM head on the last position only
        for i, layer in enumerate(self.model.encoder.text.layers):
            x, _ = layer(x, causal, image_keys_values=memory[i], past=None)
        return self.model.mlm_head(x[:, -1]), prefix


def bench_decoding(args, model, batch, device, dtype) -> None:
    """Beam search with FIBER's KV cache vs recomputing the prefix: same weights, same images."""
    from vlfw.generation import generate

    model.eval()
    options = {"max_length": args.max_length, "num_beams": args.beams, "length_penalty": args.length_penalty,
               "min_length": 1}
    decoders = {"cached": model, "recompute": RecomputingDecoder(model),
                "recompute_last": RecomputingDecoder(model, last_only=True)}
    outputs, flops = {}, {}

    def run(name):
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            return generate(decoders[name], batch, **options)

    for name in decoders:  # warm-up, counted
        counter = FlopCounterMode(display=False)
        with counter:
            outputs[name] = run(name)
        flops[name] = counter.get_total_flops()
    seconds = {name: [] for name in decoders}
    names = list(decoders)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            tokens = run(name)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds[name].append(time.perf_counter() - start)
            if not torch.equal(tokens, outputs[name]):
                raise RuntimeError(f"{name} decoding is not deterministic across rounds")
    cached = outputs["cached"]
    same = {name: (outputs[name].shape == cached.shape and torch.equal(outputs[name], cached),
                   sum(a.tolist() == b.tolist() for a, b in zip(cached, outputs[name]))) for name in names[1:]}
    eos = model.task_infos[batch.dataset_name].text.sep_id
    lengths = [int((row != 0).sum()) - 1 for row in cached]  # tokens after bos, eos included
    print(f"size={args.size} fusion_layers={model.fusion_layers} image={args.image_size}px batch={args.batch} "
          f"beams={args.beams} max_length={args.max_length} length_penalty={args.length_penalty} "
          f"gate={args.gate} lm_scale={args.lm_scale} "
          f"threads={args.threads} rounds={args.rounds} "
          f"({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'} {args.dtype}, "
          f"torch {torch.__version__})")
    equal = ", ".join(f"{name} {ok} ({rows}/{len(cached)} rows)" for name, (ok, rows) in same.items())
    print(f"same token ids as cached: {equal}; generated lengths {min(lengths)}-"
          f"{max(lengths)} (max {args.max_length}), {int((cached == eos).any(dim=1).sum())}/{len(cached)} end in eos; "
          f"distinct captions {len({tuple(row.tolist()) for row in cached})}")
    print("| decoding | s/batch median | best | vs cached | GFLOP/batch |\n|---|---|---|---|---|")
    base = statistics.median(seconds["cached"])
    for name in names:
        median = statistics.median(seconds[name])
        print(f"| {name} | {median:.3f} | {min(seconds[name]):.3f} | {median / base:.2f} | {flops[name] / 1e9:.2f} |")


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
    parser.add_argument("--decode", action="store_true",
                        help="time caption beam search with the KV cache vs recomputing the prefix instead")
    parser.add_argument("--beams", type=int, default=5)
    parser.add_argument("--max-length", type=int, default=20, help="--decode: tokens generated after bos")
    parser.add_argument("--length-penalty", type=float, default=1.0)
    parser.add_argument("--gate", type=float, default=None,
                        help="--decode: set every fusion_gate to this (random init: the gates start at 0, so the "
                             "image would not reach the captions)")
    parser.add_argument("--lm-scale", type=float, default=None,
                        help="--decode: multiply the LM head's weight by this (a peaked vocabulary, as "
                             "test_fiber_generation.py does: distinct hypotheses instead of near-ties)")
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
    if args.decode:
        if args.gate is not None:
            with torch.no_grad():
                for name, parameter in model.named_parameters():
                    if name.endswith("fusion_gate"):
                        parameter.fill_(args.gate)
        if args.lm_scale is not None:
            with torch.no_grad():
                model.mlm_head.decoder.weight.mul_(args.lm_scale)
        bench_decoding(args, model, batch, device, dtype)
        return
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
