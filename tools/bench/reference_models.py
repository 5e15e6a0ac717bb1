"""Reference readers: the simplest models that read the image, outside the framework's model zoo.

Every framework model on the Shapes world should be compared, at equal updates, with the
simplest thing that works. These readers are a few lines of plain PyTorch each, trained on the
very samples and scored with the very metrics of the framework's datasets (the builders'
evaluation samples, vlfw's metric objects), so the comparison is about the model only:

- question/statement/expression: a bag of word embeddings (mean over tokens) -> q (H);
- regions: z-scored features (train statistics) + box geometry -> a 2-layer MLP -> r_i (H);
- VQA / SNLI-VE: one glimpse a = softmax_i(w . (r_i * q)), v = sum_i a_i r_i, plus soft counts
  sum_i sigmoid(u_k . (r_i * q)) of the regions the text selects; answer = MLP([v * q; counts]);
- NLVR2: the same per image, both images' outputs concatenated;
- RefCOCO+: each region scored by w . (r_i * q).

With `--visual pixels` (VQA, SNLI-VE, NLVR2) the regions are the cells of a small CNN's grid over
the image tensor (four 3x3 convolutions, the last three of stride 2: an 8 x 8 grid at 64 px), each
cell with its centre and size as geometry: the simplest pixel reader, the yardstick for the models
that read pixels (VLMo, FIBER).

    python tools/bench/reference_models.py --task vqa2 --updates 1500 [--size default] [--seed 1] [--blind]
    python tools/bench/reference_models.py --task vqa2 --visual pixels --image-size 64

`--blind` feeds every sample the regions of another sample of its batch (a blind twin trained
and evaluated the same way). Prints val (and test) scores every `--eval-every` updates, with
the wall time. Adam, lr 1e-3, batch 64.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn
from torch.utils.data import DataLoader

from vlfw.runner.build import build_metrics
from vlfw.testing import shapes_builder

TASKS = {"vqa2": "vqa2", "snli_ve": "snli_ve", "nlvr2": "nlvr2", "refcoco_plus": "refcoco_plus"}


class Reader(nn.Module):
    def __init__(self, vocab: int, feature_size: int, outputs: int, task: str, mean: torch.Tensor, std: torch.Tensor,
                 hidden: int = 256, counts: int = 4) -> None:
        super().__init__()
        self.task = task
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.words = nn.EmbeddingBag(vocab, hidden, mode="mean")
        self.text = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU())
        self.regions = nn.Sequential(nn.Linear(feature_size + 5, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.glimpse = nn.Linear(hidden, 1 + counts)
        images = 2 if task == "nlvr2" else 1
        if task == "refcoco_plus":
            self.score = nn.Linear(hidden, 1)
        else:
            self.answer = nn.Sequential(nn.Linear(images * (hidden + counts), hidden), nn.ReLU(),
                                        nn.Linear(hidden, outputs))

    def text_vector(self, batch) -> torch.Tensor:
        ids, mask = batch["input_ids"], batch["attention_mask"].bool()
        offsets = [ids[i][mask[i]] for i in range(len(ids))]
        lengths = torch.tensor([len(o) for o in offsets])
        flat = torch.cat(offsets)
        starts = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)[:-1]])
        return self.text(self.words(flat, starts))

    def region_states(self, features, boxes, size) -> torch.Tensor:
        w, h = size[..., 0:1, None], size[..., 1:2, None]
        x1, y1, x2, y2 = boxes.unbind(-1)
        geometry = torch.stack([x1 / w[..., 0], y1 / h[..., 0], x2 / w[..., 0], y2 / h[..., 0],
                                (x2 - x1) * (y2 - y1) / (w[..., 0] * h[..., 0])], dim=-1)
        return self.regions(torch.cat([(features - self.mean) / self.std, geometry], dim=-1))

    def read(self, q, states, mask):
        logits = self.glimpse(states * q[:, None])  # (B, N, 1 + C)
        soft = logits[..., 0].masked_fill(~mask, -1e9).softmax(dim=1)
        counts = (logits[..., 1:].sigmoid() * mask[..., None]).sum(dim=1)
        return torch.cat([(soft[..., None] * states).sum(dim=1) * q, counts], dim=-1)

    def forward(self, batch) -> dict[str, torch.Tensor]:
        q = self.text_vector(batch)
        features, boxes, mask = batch["region_features"], batch["region_boxes"], batch["region_mask"].bool()
        size = batch["image_size"].float()
        if self.task == "nlvr2":  # (B, 2, N, D): read each image
            parts = [self.read(q, self.region_states(features[:, k], boxes[:, k], size[:, k]), mask[:, k])
                     for k in range(2)]
            return {"logits": self.answer(torch.cat(parts, dim=-1))}
        states = self.region_states(features, boxes, size)
        if self.task == "refcoco_plus":
            return {"region_logits": self.score(states * q[:, None]).squeeze(-1)}
        return {"logits": self.answer(self.read(q, states, mask))}


class PixelReader(Reader):
    """The same reader over the cells of a small CNN's grid instead of detector regions."""

    def __init__(self, vocab: int, outputs: int, task: str, hidden: int = 256, counts: int = 4,
                 width: int = 32) -> None:
        super().__init__(vocab, 0, outputs, task, torch.zeros(0), torch.ones(0), hidden, counts)
        layers, channels = [], 3
        for k, out in enumerate([width, 2 * width, 4 * width, 4 * width]):
            layers += [nn.Conv2d(channels, out, 3, stride=1 if k == 0 else 2, padding=1), nn.BatchNorm2d(out), nn.ReLU()]
            channels = out
        self.cnn = nn.Sequential(*layers)
        self.regions = nn.Sequential(nn.Linear(channels + 5, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())

    def grid_states(self, image: torch.Tensor) -> torch.Tensor:
        grid = self.cnn(image)  # (B, C, h, w)
        b, _, h, w = grid.shape
        ys, xs = torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")
        geometry = torch.stack([xs, ys, torch.full_like(xs, 1 / w), torch.full_like(xs, 1 / h),
                                torch.full_like(xs, 1 / (h * w))], dim=-1).reshape(1, h * w, 5)
        cells = grid.flatten(2).transpose(1, 2)
        return self.regions(torch.cat([cells, geometry.expand(b, -1, -1)], dim=-1))

    def forward(self, batch) -> dict[str, torch.Tensor]:
        q = self.text_vector(batch)
        image = batch["image"]
        if self.task == "nlvr2":  # (B, 2, 3, H, W)
            parts = []
            for k in range(2):
                states = self.grid_states(image[:, k])
                parts.append(self.read(q, states, torch.ones(states.shape[:2], dtype=torch.bool)))
            return {"logits": self.answer(torch.cat(parts, dim=-1))}
        states = self.grid_states(image)
        return {"logits": self.answer(self.read(q, states, torch.ones(states.shape[:2], dtype=torch.bool)))}


VISUAL_KEYS = ("region_features", "region_boxes", "region_mask", "image_size", "image")


def swap_regions(batch):
    out = type(batch)(batch)
    shift = max(1, batch.batch_size // 2)
    for name in VISUAL_KEYS:
        if name in batch:
            out[name] = batch[name].roll(shift, dims=0)
    return out


def loss_of(task: str, outputs, batch) -> torch.Tensor:
    if task == "vqa2":
        return nn.functional.binary_cross_entropy_with_logits(outputs["logits"], batch["targets"]) * batch["targets"].shape[1]
    if task == "refcoco_plus":
        mask = batch["region_mask"].bool()
        loss = nn.functional.binary_cross_entropy_with_logits(outputs["region_logits"], batch["region_targets"],
                                                              reduction="none")
        return (loss * mask).sum() / mask.sum()
    return nn.functional.cross_entropy(outputs["logits"], batch["label"])


def evaluate(model, builder, split: str, metrics, blind: bool) -> dict[str, float]:
    model.eval()
    for metric in metrics:
        metric.reset()
    loader = DataLoader(builder.build(split), batch_size=128, shuffle=False, collate_fn=builder.collate)
    with torch.inference_mode():
        for batch in loader:
            batch = swap_regions(batch) if blind else batch
            outputs = model(batch)
            for metric in metrics:
                metric.update(batch, outputs)
    model.train()
    out = {}
    for metric in metrics:
        metric.gather()
        out.update(metric.compute())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=sorted(TASKS), default="vqa2")
    parser.add_argument("--size", default="default")
    parser.add_argument("--updates", type=int, default=1500)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--blind", action="store_true")
    parser.add_argument("--visual", choices=["regions", "pixels"], default="regions")
    parser.add_argument("--image-size", type=int, default=64, help="with --visual pixels")
    parser.add_argument("--width", type=int, default=32, help="with --visual pixels: the CNN's first width")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.visual == "pixels" and args.task == "refcoco_plus":
        parser.error("--visual pixels reads VQA, SNLI-VE and NLVR2 (RefCOCO+ scores given boxes)")
    if args.visual == "pixels":
        builder = shapes_builder(args.task, args.size, visual="images",
                                 processors={"image": {"params": {"size": args.image_size}}})
    else:
        builder = shapes_builder(args.task, args.size, visual="regions")
    info = builder.task_info()
    metrics = build_metrics({"dataset_config": {args.task: builder.config}}, args.task, info)
    outputs = info.num_answers or info.num_labels or 1
    if args.visual == "pixels":
        model = PixelReader(info.text.vocab_size, int(outputs), args.task, args.hidden, width=args.width)
    else:
        mean = torch.tensor(info.region_feature_mean) if info.region_feature_mean else torch.zeros(info.region_feature_size)
        std = torch.tensor(info.region_feature_std) if info.region_feature_std else torch.ones(info.region_feature_size)
        model = Reader(info.text.vocab_size, int(info.region_feature_size), int(outputs), args.task, mean, std,
                       args.hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    generator = torch.Generator().manual_seed(args.seed)
    dataset = builder.build("train")
    train = DataLoader(dataset, batch_size=64, shuffle=True, drop_last=len(dataset) >= 64, collate_fn=builder.collate,
                       generator=generator)
    start, update = time.time(), 0
    print(f"reference reader on {args.task} ({args.size}, {args.visual}, seed {args.seed}"
          f"{', BLIND' if args.blind else ''})")
    while update < args.updates:
        for batch in train:
            batch = swap_regions(batch) if args.blind else batch
            loss = loss_of(args.task, model(batch), batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            update += 1
            if update % args.eval_every == 0 or update == args.updates:
                val = evaluate(model, builder, "val", metrics, args.blind)
                primary = metrics[0].primary or next(iter(val))
                print(f"update {update:5d}  loss {loss.item():.4f}  val {primary} {val[primary]:.2f}  "
                      f"({time.time() - start:.0f} s)", flush=True)
            if update >= args.updates:
                break
    test = evaluate(model, builder, "test", metrics, args.blind)
    primary = metrics[0].primary or next(iter(test))
    print(f"test {primary} {test[primary]:.2f}  ({time.time() - start:.0f} s total)")


if __name__ == "__main__":
    main()
