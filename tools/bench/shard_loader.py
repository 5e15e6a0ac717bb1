"""Loader throughput: webdataset shards vs the map-style CC3M reader on the same Shapes CC3M.

    python tools/bench/shard_loader.py                  # Shapes "default" world, 0/1/2 workers
    python tools/bench/shard_loader.py --size tiny --epochs 2

Both go through the runner's own training streams (vlfw.data.multitask.DatasetStream for the
map-style reader, vlfw.data.streaming.StreamingDatasetStream for the shards), one rank, the
same mapper and collate, one thread per process. Timed: `--epochs` whole epochs, loader
(re)starts included, after one warm-up batch. Shards are written first with the code of
`vlfw_prepare shards --source shapes` into a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch


def builder_for(size: str, visual: str, image_size: int, shards: str | None, buffer: int):
    from vlfw.datasets.cc3m import CC3MBuilder

    config = {"source": "shapes", "shapes": {"size": size, "seed": 0}, "visual": visual,
              "features": {"format": "npy"}, "processors": {"image": {"params": {"size": image_size}}}}
    if shards:
        config.update(shards=shards, shard_shuffle_buffer=buffer)
    return CC3MBuilder(config, "cc3m")


def bench(builder, workers: int, batch_size: int, epochs: int) -> tuple[int, float]:
    from vlfw.data.multitask import DatasetStream
    from vlfw.data.streaming import StreamingDatasetStream

    dataset = builder.build("train")
    kind = StreamingDatasetStream if isinstance(dataset, torch.utils.data.IterableDataset) else DatasetStream
    stream = kind("cc3m", dataset, builder.collate, batch_size, 1, 0, 0, workers)
    stream.next()  # warm: the first loader start, tokenizer, vocabulary
    batches = epochs * stream.batches_per_epoch
    start = time.perf_counter()
    for _ in range(batches):
        stream.next()
    elapsed = time.perf_counter() - start
    stream.close()
    return batches * batch_size, batches * batch_size / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="default", help="Shapes world size (default | tiny)")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3, help="epochs timed per setting")
    parser.add_argument("--samples-per-shard", type=int, default=100)
    parser.add_argument("--shuffle-buffer", type=int, default=1000)
    parser.add_argument("--workers", type=int, nargs="*", default=[0, 1, 2])
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    import vlfw.components  # noqa: F401  (the core builders and processors)
    from vlfw.datasets.records import BadRecordCounter
    from vlfw.datasets.shard_sources import shapes_cc3m_samples
    from vlfw.datasets.shards import build_shard_index, write_shards
    from vlfw.world import ensure_world

    ensure_world(size=args.size, seed=0)  # generated once (not timed)
    with tempfile.TemporaryDirectory(prefix="vlfw-shard-bench-") as folder:
        start = time.perf_counter()
        written = write_shards(shapes_cc3m_samples(args.size, 0, "train"), folder, args.samples_per_shard)
        print(f"wrote {sum(n for _, n in written)} samples in {len(written)} shards in "
              f"{time.perf_counter() - start:.1f}s ({sum(os.path.getsize(p) for p, _ in written) / 2**20:.1f} MiB)")
        start = time.perf_counter()
        index = build_shard_index([p for p, _ in written], "images", BadRecordCounter(False, "bench"))
        scanned = time.perf_counter() - start
        start = time.perf_counter()
        build_shard_index([p for p, _ in written], "images", BadRecordCounter(False, "bench"))
        print(f"index scan (tar headers only): {scanned:.3f}s for {len(written)} shards, {index.total} samples; "
              f"from its cache: {time.perf_counter() - start:.4f}s")
        print(f"{'visual':<8} {'workers':>7} {'map-style/s':>12} {'per worker':>11} {'shards/s':>10} {'per worker':>11}"
              f"   (Shapes {args.size}, {args.image_size} px, batch {args.batch_size}, buffer {args.shuffle_buffer})")
        for visual in ("images", "regions"):
            for workers in args.workers:
                rates = []
                for shards in (None, folder):
                    builder = builder_for(args.size, visual, args.image_size, shards, args.shuffle_buffer)
                    _, rate = bench(builder, workers, args.batch_size, args.epochs)
                    rates.append(rate)
                per = max(1, workers)
                print(f"{visual:<8} {workers:>7} {rates[0]:>12.1f} {rates[0] / per:>11.1f} {rates[1]:>10.1f} "
                      f"{rates[1] / per:>11.1f}", flush=True)


if __name__ == "__main__":
    main()
