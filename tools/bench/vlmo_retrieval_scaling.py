"""Time to rank N images x 5N texts: VLMo dual encoder (linear in N), the dual encoder with an ITM
re-rank of each query's top k (linear in N: 6N x k fused passes), and ITM on every pair (quadratic).

    python tools/bench/vlmo_retrieval_scaling.py --sizes 4 8 16 32 --rerank-k 4
"""

from __future__ import annotations

import argparse
import time

import torch

from vlfw.metrics.rerank import reranked_ranks
from vlfw.testing import task_info
from vlfw_vlmo.model import VLMo
from vlfw_vlmo.rerank import itm_scorer, itm_scores


@torch.no_grad()
def dual_encoder_embeddings(model, images, input_ids, batch_size):
    image = torch.cat([model.image_embedding(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])
    text = torch.cat([model.text_embedding(input_ids[i:i + batch_size]) for i in range(0, len(input_ids), batch_size)])
    return image, text


@torch.no_grad()
def dual_encoder_rank(model, images, input_ids, batch_size):
    image, text = dual_encoder_embeddings(model, images, input_ids, batch_size)
    return (text @ image.T).argsort(dim=1, descending=True)


@torch.no_grad()
def reranked_rank(model, images, input_ids, batch_size, k):
    """The ranks of the right answers after re-ranking each query's top k (what the metric does)."""
    image, text = dual_encoder_embeddings(model, images, input_ids, batch_size)
    owners = torch.arange(len(images)).repeat_interleave(len(input_ids) // len(images))
    scorer = itm_scorer(model, images, input_ids, None, batch_size)
    return reranked_ranks(image, text, owners, scorer, k)


@torch.no_grad()
def itm_all_pairs_rank(model, images, input_ids, batch_size):
    texts, count = len(input_ids), len(images)
    image_index = torch.arange(count).repeat(texts)
    text_index = torch.arange(texts).repeat_interleave(count)
    scores = itm_scores(model, images, input_ids, None, image_index, text_index, batch_size).view(texts, count)
    return scores.argsort(dim=1, descending=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--text-length", type=int, default=16)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 8, 16, 32])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rerank-k", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = VLMo({"size": args.size, "image_size": args.image_size, "drop_path_rate": 0.0},
                 {"coco_retrieval": task_info("retrieval", "coco_retrieval", visual="images")}).eval()
    print(f"model={args.size} image={args.image_size}px text={args.text_length} tokens threads={args.threads} (CPU fp32)")
    print(f"{'N images':>9} {'5N texts':>9} {'dual encoder s':>15} {f'dual+re-rank top {args.rerank_k} s':>22} "
          f"{'ITM all pairs s':>16} {'all pairs / dual':>17}")
    warm = torch.randn(2, 3, args.image_size, args.image_size)
    warm_ids = torch.randint(1000, 3000, (2, args.text_length))
    dual_encoder_rank(model, warm, warm_ids, args.batch_size)  # first-call allocations, not timed
    itm_all_pairs_rank(model, warm, warm_ids, args.batch_size)
    reranked_rank(model, warm, warm_ids, args.batch_size, args.rerank_k)
    for n in args.sizes:
        images = torch.randn(n, 3, args.image_size, args.image_size)
        ids = torch.randint(1000, 3000, (5 * n, args.text_length))
        ids[:, 0] = 101
        start = time.perf_counter()
        dual_encoder_rank(model, images, ids, args.batch_size)
        dual = time.perf_counter() - start
        start = time.perf_counter()
        reranked_rank(model, images, ids, args.batch_size, args.rerank_k)
        reranked = time.perf_counter() - start
        start = time.perf_counter()
        itm_all_pairs_rank(model, images, ids, args.batch_size)
        pairs = time.perf_counter() - start
        print(f"{n:9d} {5 * n:9d} {dual:15.3f} {reranked:22.3f} {pairs:16.3f} {pairs / dual:17.1f}")


if __name__ == "__main__":
    main()
