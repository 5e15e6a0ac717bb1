"""Data-loading throughput: samples/s of one loader worker for each dataset builder.

    python tools/bench/data.py               # Shapes "default" world
    python tools/bench/data.py --size tiny   # quick run on the tiny world

Each builder is timed in the main process (= one worker's work: read, decode, transform,
tokenize) with images (224 px) and with BUTD TSV region features, then collated in batches.
"""

from __future__ import annotations

import argparse
import time

import torch


def bench(name: str, visual: str, size: str, samples: int, image_size: int, batch_size: int) -> tuple[int, float]:
    from vlfw.registry import DATASETS

    builder = DATASETS.get(name)({"source": "shapes", "shapes": {"size": size, "seed": 0}, "visual": visual,
                                  "processors": {"image": {"params": {"size": image_size}}}}, name)
    dataset = builder.build("train")
    count = min(samples, len(dataset))
    dataset[0]  # warm: indexes, tokenizer, vocabulary
    start = time.perf_counter()
    batch = []
    for index in range(count):
        batch.append(dataset[index])
        if len(batch) == batch_size:
            builder.collate(batch)
            batch = []
    if batch:
        builder.collate(batch)
    return count, count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="default", help="Shapes world size (default | tiny)")
    parser.add_argument("--samples", type=int, default=256, help="samples timed per builder and mode")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--datasets", nargs="*", default=None, help="builder names (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one loader worker
    import vlfw.components  # noqa: F401  (the core builders)
    from vlfw.registry import DATASETS
    from vlfw.world import ensure_world

    ensure_world(size=args.size, seed=0)
    names = args.datasets or DATASETS.names()
    print(f"{'dataset':<22} {'images/s':>10} {'regions/s':>10}   (samples/s per worker, Shapes {args.size})")
    for name in names:
        row = []
        for visual in ("images", "regions"):
            try:
                _, rate = bench(name, visual, args.size, args.samples, args.image_size, args.batch_size)
                row.append(f"{rate:10.1f}")
            except Exception as error:  # noqa: BLE001 - report and go on with the other builders
                row.append(f"{'error':>10}")
                print(f"  {name} {visual}: {type(error).__name__}: {error}")
        print(f"{name:<22} {row[0]} {row[1]}", flush=True)


if __name__ == "__main__":
    main()
