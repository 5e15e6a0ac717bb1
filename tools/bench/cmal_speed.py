"""CMAL training speed per pre-training objective, against Hugging Face VisualBERT, and the share of
anchor detection in data loading.

Each mode is one AdamW step of the `cmal` model on the same synthetic batch (B samples, N regions,
L tokens, A anchors per sample at distinct words and regions): amc (one hybrid sequence per scanned
anchor: B * min(A, max_anchors_per_sample) sequences through CMAI), amc_one (cmap.scan=one: B
sequences), mlm, mrm, itm, vtc (UMSE only) and all (the five in one step, the loss-weights reading).
`--visualbert` adds Hugging Face `transformers.VisualBertModel` at CMAI's size (layers, hidden, heads,
intermediate; dropout 0 as CMAL here) with VisualBERT's pre-training step on the same batch: one pass
of the masked caption (`mlm_input_ids`) with the regions' features (half the captions with another
sample's image), MLM (a BERT transform + decoder tied to the word embeddings, CMAL's MLM head) on the
masked words and ITM (FC on the pooled [CLS], BCE, CMAL's ITM head) in one loss. VisualBERT has no
box input and no UMSE layers (CMAL's one visual and one textual layer come on top of CMAI's).
Every model is built and warmed up once (vlbert_speed.trainer: the same step, optimizer and timing
for all), then interleaved rounds of `--steps` steps each (the order rotates every round). Reports
median and best steps/s per mode, the number of hybrid sequences CMAI ran and, with --visualbert,
the ratio steps/s CMAL / steps/s VisualBERT (of the medians and the median of the per-round ratios).

`--anchors-share` instead times the data side: every training sample of the Shapes world's
`cmal_pretraining` (or `--dataset cmal_coco_captions`) through its dataset mapper, and inside it the
`anchor_points` processor (tokens merged into words, region tags, the thesaurus match, the fields);
reports both per sample and the anchors' percentage of the mapping.

    python tools/bench/cmal_speed.py --size tiny --batch 32
    python tools/bench/cmal_speed.py --size small --batch 16 --rounds 3
    python tools/bench/cmal_speed.py --size tiny --batch 32 --modes amc amc_one all --visualbert --rounds 4
    python tools/bench/cmal_speed.py --anchors-share --world tiny --passes 3
    python tools/bench/cmal_speed.py --device cuda --size base --batch 64
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from vlfw.data.batch import Batch
from vlfw.tasks import TaskInfo
from vlfw.testing import bert_text_info

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # tools/bench: vlbert_speed, also when imported
from vlbert_speed import trainer  # noqa: E402  (the same warm-up, step and timing as the VL-BERT comparison)

MODES = ("amc", "amc_one", "mlm", "mrm", "itm", "vtc", "all")
VISUALBERT = "visualbert"


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


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def cmal_builder(mode: str, batch: Batch, sequences: list[int], parameters: dict[str, str]):
    """A vlbert_speed.trainer builder: (CMAL of `mode`, its loss on `batch`); counts CMAI's sequences."""

    def make(args, device):
        model = build(args, device, mode)
        parameters[mode] = f"{count(model) / 1e6:.2f}M ({count(model.cmai) / 1e6:.2f}M in CMAI)"
        original = model.cmai.forward

        def counting(embeddings, mask):
            sequences.append(int(embeddings.shape[0]))
            return original(embeddings, mask)

        model.cmai.forward = counting
        return model, lambda: sum(model(batch).values())

    return make


def visualbert_builder(batch: Batch, parameters: dict[str, str]):
    """A vlbert_speed.trainer builder: HF VisualBertModel at CMAI's size with an MLM and an ITM head,
    VisualBERT's pre-training step (masked caption + image, MLM + ITM in one pass) on `batch`."""

    def make(args, device):
        from transformers import VisualBertConfig, VisualBertModel

        from vlfw_cmal.config import SIZES
        from vlfw_cmal.objectives import MaskedLanguageModelHead

        sizes = SIZES[args.size]
        config = VisualBertConfig(hidden_size=sizes["hidden_size"], num_hidden_layers=sizes["num_layers"],
                                  num_attention_heads=sizes["num_heads"], intermediate_size=sizes["intermediate_size"],
                                  visual_embedding_dim=args.feature_size, vocab_size=bert_text_info().vocab_size,
                                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        body = VisualBertModel(config).to(device)
        hidden = sizes["hidden_size"]
        mlm = MaskedLanguageModelHead(hidden, body.embeddings.word_embeddings, config.layer_norm_eps).to(device)
        itm = torch.nn.Linear(hidden, 1).to(device)
        model = torch.nn.ModuleDict({"body": body, "mlm": mlm, "itm": itm})
        parameters[VISUALBERT] = (f"{count(model) / 1e6:.2f}M ({count(body.encoder) / 1e6:.2f}M in the encoder; "
                                  f"attention {config._attn_implementation})")
        size = batch.input_ids.shape[0]
        generator = torch.Generator().manual_seed(3)
        negative = torch.rand(size, generator=generator) < 0.5  # as CMAL's itm_negative_probability
        source = torch.where(negative, (torch.arange(size) + 1) % size, torch.arange(size)).to(device)
        match = (~negative).float().to(device)
        text_mask = batch.attention_mask.long()
        visual_mask = batch.region_mask.long()
        labels = batch.mlm_labels
        chosen = labels != -100

        def loss():
            out = body(input_ids=batch.mlm_input_ids, attention_mask=text_mask,
                       visual_embeds=batch.region_features[source], visual_attention_mask=visual_mask)
            words = out.last_hidden_state[:, :labels.shape[1]]  # text first, then the regions
            mlm_loss = F.cross_entropy(mlm(words[chosen]).float(), labels[chosen])
            itm_loss = F.binary_cross_entropy_with_logits(itm(out.pooler_output).squeeze(-1).float(), match)
            return mlm_loss + itm_loss

        return model, loss

    return make


def speed(args) -> None:
    torch.manual_seed(0)
    device = args.device
    batch = synthetic_batch(args, torch.Generator().manual_seed(0)).to(device)
    names = list(args.modes) + ([VISUALBERT] if args.visualbert else [])
    sequences: dict[str, list[int]] = {m: [] for m in args.modes}
    runs, parameters = {}, {}
    for name in names:
        make = (visualbert_builder(batch, parameters) if name == VISUALBERT
                else cmal_builder(name, batch, sequences[name], parameters))
        runs[name] = trainer(make, args, device, None)  # built, warmed up: run(steps) -> (steps/s, ms in AdamW)
    print(f"size {args.size}, batch {args.batch}, {args.regions} regions of {args.feature_size}-d, {args.length} tokens, "
          f"{args.anchors} anchors per sample, device {args.device}, {torch.get_num_threads()} thread(s), "
          f"torch {torch.__version__}, load average before {os.getloadavg()}", flush=True)
    rates: dict[str, list[float]] = {m: [] for m in names}
    for round_index in range(args.rounds):
        order = names[round_index % len(names):] + names[:round_index % len(names)]
        for name in order:
            if name in sequences:
                sequences[name].clear()
            rates[name].append(runs[name](args.steps)[0])
        if args.visualbert:
            print(f"  round {round_index + 1}: " + "  ".join(f"{n} {rates[n][-1]:.2f}" for n in names), flush=True)
    header = f"{'mode':<10} {'median steps/s':>15} {'best':>8} {'CMAI sequences per step':>25}"
    print(header + (f" {'ratio to VisualBERT (medians / per-round median)':>50}" if args.visualbert else ""))
    for name in names:
        per_step = sum(sequences[name]) / max(1, args.steps) if name in sequences else args.batch
        line = f"{name:<10} {statistics.median(rates[name]):>15.2f} {max(rates[name]):>8.2f} {per_step:>25.0f}"
        if args.visualbert:
            ours, theirs = rates[name], rates[VISUALBERT]
            paired = statistics.median(a / b for a, b in zip(ours, theirs))
            line += f" {statistics.median(ours) / statistics.median(theirs):>41.3f} / {paired:.3f}"
        print(line)
    print("parameters: " + "; ".join(f"{n} {parameters[n]}" for n in names))
    print(f"load average after {os.getloadavg()}")


def anchors_share(args) -> None:
    """Per-sample time of the whole sample mapping and of the anchor_points processor within it."""
    import vlfw_cmal  # noqa: F401  (registers the cmal datasets)
    from vlfw.processors import anchors as module  # sample_fields calls find_anchors / anchor_fields through it
    from vlfw.testing import shapes_builder

    builder = shapes_builder(args.dataset, size=args.world)
    dataset = builder.build("train")
    mapper = dataset.mapper
    processor = mapper.anchors
    if processor is None:
        raise SystemExit(f"{args.dataset}: its training mapper has no anchor processor")
    keys = ("anchors", "words", "tags", "match", "fields")
    spent = dict.fromkeys(keys, 0.0)

    def timed(key, function):
        def wrapper(*arguments, **keywords):
            start = time.perf_counter()
            try:
                return function(*arguments, **keywords)
            finally:
                spent[key] += time.perf_counter() - start
        return wrapper

    processor.sample_fields = timed("anchors", processor.sample_fields)
    processor.words = timed("words", processor.words)
    processor.tags = timed("tags", processor.tags)
    module.find_anchors = timed("match", module.find_anchors)
    module.anchor_fields = timed("fields", module.anchor_fields)
    first = mapper(dataset.records[0], 0, dataset.generator(0))
    print(f"{args.dataset} train, Shapes world {args.world}: {len(dataset)} samples, {len(first.region_features)} regions "
          f"of {first.region_features.shape[-1]}-d, {len(first.input_ids)} tokens in the first; "
          f"{torch.get_num_threads()} thread(s), load average before {os.getloadavg()}", flush=True)
    anchors = sum(len(mapper(r, i, dataset.generator(i)).anchor_mask) for i, r in enumerate(dataset.records))
    print(f"{anchors / len(dataset):.2f} anchors per sample; passes (the first after an untimed warm-up pass):")
    shares, totals, per_anchor = [], [], []
    for index in range(args.passes):
        spent.update(dict.fromkeys(keys, 0.0))
        start = time.perf_counter()
        for position, record in enumerate(dataset.records):
            mapper(record, position, dataset.generator(position))
        total = time.perf_counter() - start
        count = len(dataset)
        shares.append(100 * spent["anchors"] / total)
        totals.append(1e6 * total / count)
        per_anchor.append(1e6 * spent["anchors"] / count)
        print(f"  pass {index + 1}: mapping {1e6 * total / count:.0f} us/sample, anchor_points {per_anchor[-1]:.0f} "
              f"us/sample (" + ", ".join(f"{k} {1e6 * spent[k] / count:.0f}" for k in keys[1:]) + f"): "
              f"{shares[-1]:.1f}%", flush=True)
    print(f"median: mapping {statistics.median(totals):.0f} us/sample, anchor_points {statistics.median(per_anchor):.0f} "
          f"us/sample, {statistics.median(shares):.1f}% of the mapping; load average after {os.getloadavg()}")


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
    parser.add_argument("--visualbert", action="store_true", help="add HF VisualBERT's MLM + ITM step at CMAI's size")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--anchors-share", action="store_true", help="time anchor_points in the sample mapping instead")
    parser.add_argument("--dataset", default="cmal_pretraining", choices=("cmal_pretraining", "cmal_coco_captions"))
    parser.add_argument("--world", default="tiny", help="Shapes world size for --anchors-share")
    parser.add_argument("--passes", type=int, default=3, help="timed passes over the dataset for --anchors-share")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.anchors_share:
        anchors_share(args)
    else:
        speed(args)


if __name__ == "__main__":
    main()
