"""Training speed of vlfw's VL-BERT against Hugging Face `transformers.VisualBertModel`.

Both models get the same sizes (hidden, layers, heads, intermediate), the same inputs
(`--text` tokens, `--regions` precomputed 2048-d region features with boxes) and the same
training step (forward, a loss on the [CLS]/pooled output, backward, AdamW). Printed: steps/s
side by side, CPU fp32 always and CUDA bf16 autocast when a GPU is present.

    python tools/bench/vlbert_speed.py --hidden 256 --layers 4 --heads 4 --batch 8 --steps 5
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from vlfw.data.batch import Batch
from vlfw.registry import MODELS


def make_inputs(batch: int, text: int, regions: int, feature: int, vocab: int, device: str):
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, vocab, (batch, text), generator=generator)
    ids[:, 0], ids[:, -1] = 101, 102
    xy = torch.rand(batch, regions, 2, generator=generator) * 400
    wh = torch.rand(batch, regions, 2, generator=generator) * 200 + 10
    boxes = torch.cat([xy, xy + wh], dim=-1)
    features = torch.randn(batch, regions, feature, generator=generator).relu()
    labels = torch.randint(0, 3, (batch,), generator=generator)
    to = lambda t: t.to(device)  # noqa: E731
    return to(ids), to(boxes), to(features), to(labels)


def vlbert(args, device: str):
    cls = MODELS.get("vlbert")
    config = OmegaConf.merge(OmegaConf.create(cls.DEFAULT_CONFIG), {
        "size": "base", "hidden_size": args.hidden, "num_layers": args.layers, "num_heads": args.heads,
        "intermediate_size": 4 * args.hidden, "bert_init": "none", "region_feature_size": args.feature,
        "end_to_end": False})
    model = cls(config, {"snli_ve": {"task": "classification", "num_labels": 3, "visual": "regions"}}).to(device)
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
    head = torch.nn.Linear(args.hidden, 3).to(device)
    model = torch.nn.ModuleDict({"body": body, "head": head})
    ids, _, features, labels = make_inputs(args.batch, args.text, args.regions, args.feature, 30522, device)

    def step():
        out = body(input_ids=ids, attention_mask=torch.ones_like(ids), visual_embeds=features,
                   visual_attention_mask=torch.ones(features.shape[:2], dtype=torch.long, device=device))
        return F.cross_entropy(head(out.pooler_output).float(), labels)

    return model, step


def measure(build, args, device: str, dtype: torch.dtype | None) -> float:
    torch.manual_seed(0)
    model, loss_fn = build(args, device)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def one():
        with torch.autocast(device_type="cuda", dtype=dtype, enabled=dtype is not None):
            loss = loss_fn()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(args.warmup):
        one()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.steps):
        one()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return args.steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--text", type=int, default=40)
    parser.add_argument("--regions", type=int, default=36)
    parser.add_argument("--feature", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = [("cpu", "fp32", None)]
    if torch.cuda.is_available():
        settings.append(("cuda", "bf16", torch.bfloat16))
    print(f"hidden={args.hidden} layers={args.layers} heads={args.heads} text={args.text} regions={args.regions} "
          f"feature={args.feature} batch={args.batch} steps={args.steps} torch={torch.__version__}")
    print(f"{'device':8} {'precision':9} {'vlfw vlbert steps/s':>20} {'HF VisualBert steps/s':>22} {'ratio':>7}")
    for device, name, dtype in settings:
        ours = measure(vlbert, args, device, dtype)
        theirs = measure(visualbert, args, device, dtype)
        print(f"{device:8} {name:9} {ours:20.3f} {theirs:22.3f} {ours / theirs:7.2f}")


if __name__ == "__main__":
    main()
