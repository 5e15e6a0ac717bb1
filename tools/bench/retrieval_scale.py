"""Retrieval at benchmark scale (COCO 5k images x 25k captions, Flickr30k 1k x 5k) on the CPU.

Three parts, each printed as a markdown table:

  rank   the ranking alone (`vlfw.metrics.rerank.reranked_ranks`, what `retrieval_recall` and the
         evaluator's re-rank step run) on random unit-norm embeddings: CPU time, wall time and peak
         memory for chunked similarity rows and for one full I x T matrix (chunk >= max(I, T)),
         and with a re-rank of each query's top k by a stand-in pair scorer (free, so the rows
         show the ranking's own cost and count the pairs that a real scorer would get). Every
         configuration runs in a fresh process: peak memory is the rise of that process's peak
         RSS (VmHWM, reset through /proc/self/clear_refs) over its RSS just before the ranking;
         "largest intermediate" is the biggest tensor any torch call inside the ranking made.
  embed  VLMo dual-encoder throughput (images/s through the image-only pass, texts/s through the
         text-only pass, [CLS]-only last layer as in evaluation) at 3 measured sizes ("spread":
         how far the per-item costs at those sizes differ, the linearity check), the per-item
         cost over all of them, and the embedding time of COCO 5k / 25k and Flickr 1k / 5k
         extrapolated from that cost.
  itm    VLMo ITM cost per fused (image, caption) pair, measured the same way, and the
         extrapolated cost of re-ranking every query's top k (k = 16, 128) in both directions:
         (I + T) x k fused pairs, against ITM over all I x T pairs.

    python tools/bench/retrieval_scale.py                      # all parts, 1 thread (~5-10 min)
    python tools/bench/retrieval_scale.py --parts rank --dims 256
    python tools/bench/retrieval_scale.py --parts embed itm --sizes tiny

Times are CPU seconds of the process (robust to other jobs on a shared machine; with 1 thread
close to wall time on an idle one); the rank table gives wall time too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

# (name, images, texts): the 5k / 1k test splits with 5 captions per image
SCALES = (("Flickr30k 1k", 1000, 5000), ("COCO 5k", 5000, 25000))
MIB = float(1 << 20)


# -- part 1: the ranking, one configuration per process ------------------------------------------
def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


class LargestTensor(TorchFunctionMode):
    """Records the element count of the biggest tensor that any torch call returns, other than
    the given inputs themselves (`.float()` of a float tensor returns it)."""

    def __init__(self, *inputs: torch.Tensor) -> None:
        super().__init__()
        self.largest = 0
        self.inputs = {tensor.data_ptr() for tensor in inputs}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(value, torch.Tensor) and value.data_ptr() not in self.inputs:
                self.largest = max(self.largest, value.numel())
        return out


class FreeScorer:
    """A stand-in pair scorer: a fixed pseudo-random score per (image, text), counts pairs and calls."""

    def __init__(self) -> None:
        self.pairs, self.calls, self.largest_call = 0, 0, 0

    def __call__(self, image_index: torch.Tensor, text_index: torch.Tensor) -> torch.Tensor:
        self.pairs += len(image_index)
        self.calls += 1
        self.largest_call = max(self.largest_call, len(image_index))
        return ((image_index * 7919 + text_index * 104729) % 1009).float()


def rank_worker(images: int, texts: int, dim: int, chunk: int, k: int) -> dict:
    from vlfw.metrics.rerank import reranked_ranks

    g = torch.Generator().manual_seed(0)
    image_embeddings = F.normalize(torch.randn(images, dim, generator=g), dim=1)
    text_embeddings = F.normalize(torch.randn(texts, dim, generator=g), dim=1)
    owners = torch.arange(texts) % images
    scorer = FreeScorer() if k else None
    # warm-up on a slice (kernels, first-call allocations), not measured
    reranked_ranks(image_embeddings[:8], text_embeddings[:40], owners[:40] % 8, scorer, k, chunk_size=chunk)
    if scorer is not None:
        scorer.__init__()
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # reset VmHWM to the current RSS
    base = _status_kib("VmRSS:")
    largest = LargestTensor(image_embeddings, text_embeddings)
    wall, cpu = time.perf_counter(), time.process_time()
    with largest:
        text_ranks, image_ranks = reranked_ranks(image_embeddings, text_embeddings, owners, scorer, k,
                                                 chunk_size=chunk)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    peak = _status_kib("VmHWM:") - base
    return {"images": images, "texts": texts, "dim": dim, "chunk": chunk, "k": k, "cpu_s": cpu, "wall_s": wall,
            "peak_mib": peak / 1024, "largest_elements": largest.largest,
            "pairs": scorer.pairs if scorer else 0, "largest_call": scorer.largest_call if scorer else 0,
            "all_ranked": bool((text_ranks >= 0).all() and (image_ranks >= 0).all())}


def run_rank_config(args, images: int, texts: int, dim: int, chunk: int, k: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    command = [sys.executable, os.path.abspath(__file__), "--rank-worker", str(images), str(texts), str(dim),
               str(chunk), str(k), "--threads", str(args.threads)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"rank worker {images}x{texts} D={dim} chunk={chunk} k={k} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def part_rank(args) -> list[dict]:
    rows = []
    print("\n### Ranking alone (random unit-norm embeddings, 5 captions per image)\n")
    print("| split | I x T | D | chunk | k | CPU s | wall s | peak RSS rise (MiB) | largest intermediate (MiB) "
          "| CPU ns per I x T entry | pairs scored |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    configs = [(name, i, t, d, c, 0) for name, i, t in SCALES for d in args.dims
               for c in (*args.chunks, max(i, t))]
    configs += [(name, i, t, args.dims[-1], args.chunks[-1], k) for name, i, t in SCALES for k in args.rerank_ks]
    for name, images, texts, dim, chunk, k in configs:
        row = run_rank_config(args, images, texts, dim, chunk, k)
        row["split"] = name
        rows.append(row)
        label = f"{chunk} (full)" if chunk >= max(images, texts) else str(chunk)
        per_entry = 1e9 * row["cpu_s"] / (images * texts)
        print(f"| {name} | {images} x {texts} | {dim} | {label} | {k} | {row['cpu_s']:.2f} | {row['wall_s']:.2f} "
              f"| {row['peak_mib']:.0f} | {4 * row['largest_elements'] / MIB:.0f} | {per_entry:.2f} "
              f"| {row['pairs']} |", flush=True)
    return rows


# -- parts 2 and 3: the model ----------------------------------------------------------------------
def build_model(size: str, image_size: int, text_length: int):
    from vlfw.testing import task_info
    from vlfw_vlmo.model import VLMo

    config = {"size": size, "image_size": image_size, "patch_size": 16, "max_text_length": text_length,
              "drop_path_rate": 0.0}
    return VLMo(config, {"coco_retrieval": task_info("retrieval", "coco_retrieval", visual="images")}).eval()


def flops_per_item(call, item) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        call(item)
    return counter.get_total_flops()


@torch.no_grad()
def measured_cost(call, make, counts: list[int], batch: int) -> dict:
    """CPU seconds of `call` over n items (in batches of `batch`) for each n in counts, and the
    per-item cost over all of them (total seconds / total items). Linear cost shows as equal
    per-item costs at every n; under machine load the spread is noise of a few percent, which a
    least-squares slope through 2-3 points would magnify."""
    call(make(min(batch, counts[0])))  # warm-up, not measured
    seconds = []
    for n in counts:
        items = make(n)
        start = time.process_time()
        for offset in range(0, n, batch):
            call(items[offset:offset + batch] if not isinstance(items, tuple)
                 else tuple(part[offset:offset + batch] for part in items))
        seconds.append(time.process_time() - start)
    return {"counts": counts, "seconds": seconds, "per_item_s": sum(seconds) / sum(counts),
            "per_item_each": [s / n for n, s in zip(counts, seconds)]}


def fmt_duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def part_model(args) -> dict:
    from vlfw.data.batch import Batch

    results = {}
    for size in args.sizes:
        model = build_model(size, args.image_size, args.text_length)
        params = sum(p.numel() for p in model.parameters())
        g = torch.Generator().manual_seed(0)

        def images(n):
            return torch.randn(n, 3, args.image_size, args.image_size, generator=g)

        def ids(n):
            out = torch.randint(1000, 30000, (n, args.text_length), generator=g)
            out[:, 0] = 101
            return out

        counts = args.counts_base if size == "base" else args.counts_tiny
        batch = args.batch
        parts = {}
        if "embed" in args.parts:
            parts["image"] = measured_cost(model.image_embedding, images, counts["image"], batch)
            parts["image"]["flops"] = flops_per_item(model.image_embedding, images(1))
            parts["text"] = measured_cost(model.text_embedding, ids, counts["text"], batch)
            parts["text"]["flops"] = flops_per_item(model.text_embedding, ids(1))
        if "itm" in args.parts:
            score = lambda pair: model.score_pairs(Batch(image=pair[0], input_ids=pair[1]))  # noqa: E731
            pair = lambda n: (images(n), ids(n))  # noqa: E731
            parts["pair"] = measured_cost(score, pair, counts["pair"], batch)
            parts["pair"]["flops"] = flops_per_item(score, pair(1))
        results[size] = {"params": params, **parts}
    return results


def print_model_tables(args, results: dict, rank_rows: list[dict]) -> None:
    names = {"image": "image (dual encoder)", "text": "text (dual encoder)", "pair": "ITM fused pair"}
    print(f"\n### VLMo per-item cost ({args.image_size} px, patch 16, {args.text_length} text tokens, "
          f"batch {args.batch}, CPU seconds)\n")
    print("| size | params | pass | GFLOP / item | measured n: CPU ms per item | spread | per item (all n) "
          "| items/s | GFLOP/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for size, parts in results.items():
        for name in ("image", "text", "pair"):
            if name not in parts:
                continue
            m = parts[name]
            each = ", ".join(f"{n}: {1000 * s:.3g}" for n, s in zip(m["counts"], m["per_item_each"]))
            values = m["per_item_each"]
            spread = (max(values) - min(values)) / (sum(values) / len(values))
            print(f"| {size} | {parts['params'] / 1e6:.1f} M | {names[name]} | {m['flops'] / 1e9:.2f} | {each} "
                  f"| {100 * spread:.0f}% | {1000 * m['per_item_s']:.3g} ms | {1 / m['per_item_s']:.1f} "
                  f"| {m['flops'] / m['per_item_s'] / 1e9:.0f} |")
    rank_cost = {(r["images"], r["k"]): r["cpu_s"] for r in rank_rows
                 if r["chunk"] == args.chunks[-1] and (r["k"] or r["dim"] == args.dims[-1])}
    print("\n### Extrapolated from the measured per-item cost (CPU seconds, 1 thread; not measured at scale)\n")
    print("| size | split | embed I images + T texts | re-rank k | fused pairs (I + T) x k | ITM time "
          "| ranking (measured, part 1) | total | ITM on all I x T pairs |")
    print("|---|---|---|---|---|---|---|---|---|")
    for size, parts in results.items():
        for name, images, texts in SCALES:
            embed = (parts["image"]["per_item_s"] * images + parts["text"]["per_item_s"] * texts
                     if "image" in parts else float("nan"))
            for k in (0, *args.rerank_ks):
                pairs = (images + texts) * k
                itm = pairs * parts["pair"]["per_item_s"] if "pair" in parts else float("nan")
                rank = rank_cost.get((images, k))
                rank_text = "-" if rank is None else f"{rank:.1f} s"
                total = embed + itm + (rank or 0.0)
                all_pairs = (fmt_duration(images * texts * parts["pair"]["per_item_s"])
                             if "pair" in parts and k == 0 else "")
                print(f"| {size} | {name} ({images} / {texts}) | {fmt_duration(embed)} | {k} | {pairs} "
                      f"| {fmt_duration(itm) if k else '-'} | {rank_text} | {fmt_duration(total)} | {all_pairs} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["rank", "embed", "itm"], choices=["rank", "embed", "itm"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dims", type=int, nargs="+", default=[256, 768])
    parser.add_argument("--chunks", type=int, nargs="+", default=[64, 256, 1024],
                        help="chunk sizes of the ranking (a full-matrix row is added per split)")
    parser.add_argument("--rerank-ks", type=int, nargs="+", default=[16, 128])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "base"], choices=["tiny", "small", "base", "large"])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--text-length", type=int, default=40)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--base-images", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--base-texts", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--base-pairs", type=int, nargs="+", default=[8, 16, 24])
    parser.add_argument("--rank-worker", type=int, nargs=5, metavar=("I", "T", "D", "CHUNK", "K"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.rank_worker:
        print(json.dumps(rank_worker(*args.rank_worker)))
        return
    torch.manual_seed(0)
    args.counts_base = {"image": args.base_images, "text": args.base_texts, "pair": args.base_pairs}
    args.counts_tiny = {"image": [32, 64, 128], "text": [64, 128, 256], "pair": [32, 64, 128]}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), fp32, "
          f"load average before: {os.getloadavg()[0]:.1f}")
    started = time.perf_counter()
    rank_rows = part_rank(args) if "rank" in args.parts else []
    if {"embed", "itm"} & set(args.parts):
        print_model_tables(args, part_model(args), rank_rows)
    print(f"\ntotal wall time {time.perf_counter() - started:.0f} s, load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
