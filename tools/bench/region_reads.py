"""The cost of reading one image's region features: npy (with its `_info.npy` pickle through the
restricted unpickler), BUTD TSV, and either from the readers' cache of decoded regions
(`features.cache_mb`), side by side in one process on the Shapes world's COCO pool.

    python tools/bench/region_reads.py [--size default] [--images 1000] [--rounds 3]

Prints milliseconds per read (median over rounds; each round reads the same images once
uncached and once more from a warm cache).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from vlfw.datasets.readers import ButdTsvReader, NpyFeatureReader
from vlfw.world import ensure_world


def per_read_ms(reader, keys: list[tuple[str, str]]) -> float:
    start = time.perf_counter()
    for image_id, stem in keys:
        reader.read(image_id, stem)
    return (time.perf_counter() - start) / len(keys) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="default")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    root = ensure_world(args.size, seed=0)
    npy_dir = os.path.join(root, "features", "npy", "coco")
    stems = sorted(name[:-4] for name in os.listdir(npy_dir)
                   if name.endswith(".npy") and not name.endswith("_info.npy"))[:args.images]
    tsv = os.path.join(root, "features", "butd", "coco.tsv")
    ids = list(ButdTsvReader([tsv], 36, "bench").index)[:args.images]
    results: dict[str, list[float]] = {"npy": [], "npy, cached": [], "tsv": [], "tsv, cached": []}
    for _ in range(args.rounds):
        npy = NpyFeatureReader(npy_dir, 36, "bench", cache_mb=512)
        keys = [(stem, stem) for stem in stems]
        results["npy"].append(per_read_ms(npy, keys))
        results["npy, cached"].append(per_read_ms(npy, keys))
        reader = ButdTsvReader([tsv], 36, "bench", cache_mb=512)
        reader.index  # built once per reader, not timed  # noqa: B018
        keys = [(image_id, "") for image_id in ids]
        results["tsv"].append(per_read_ms(reader, keys))
        results["tsv, cached"].append(per_read_ms(reader, keys))
    print(f"{len(stems)} images of the {args.size} world's COCO pool, {args.rounds} rounds, one process")
    print("| read | ms per image (median) |")
    print("|---|---|")
    for name, values in results.items():
        print(f"| {name} | {statistics.median(values):.3f} |")


if __name__ == "__main__":
    main()
