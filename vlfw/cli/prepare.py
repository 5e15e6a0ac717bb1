"""vlfw_prepare: generate (or later, convert) data for vlfw.

    vlfw_prepare shapes --size default --seed 0 [--cache-dir D] [--force]
    vlfw_prepare shards --source shapes|FOLDER --out DIR --samples-per-shard N [--size tiny --seed 0]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from vlfw.errors import VlfwError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlfw_prepare", description="Prepare data for vlfw.")
    sub = parser.add_subparsers(dest="command", required=True)
    shapes = sub.add_parser("shapes", help="generate the built-in synthetic Shapes world")
    shapes.add_argument("--size", default="tiny", help="tiny | default (default: tiny)")
    shapes.add_argument("--seed", type=int, default=0)
    shapes.add_argument("--cache-dir", default=None, help="default: $VLFW_CACHE or ~/.cache/vlfw")
    shapes.add_argument("--force", action="store_true", help="regenerate even when a complete copy is cached")
    shapes.add_argument("--feature-dim", type=int, default=None, help="region feature size (default 256)")
    shapes.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    shards = sub.add_parser("shards", help="write image + caption pairs as webdataset tar shards")
    shards.add_argument("--source", required=True,
                        help="'shapes' (the Shapes world's CC3M: DIR/train and DIR/val) or a folder of image + "
                             "same-stem .txt caption pairs")
    shards.add_argument("--out", required=True, help="folder the shards are written to")
    shards.add_argument("--samples-per-shard", type=int, default=1000)
    shards.add_argument("--size", default="tiny", help="with --source shapes: tiny | default")
    shards.add_argument("--seed", type=int, default=0, help="with --source shapes: the world's seed")
    shards.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    return parser


def _shards(args: argparse.Namespace) -> int:
    from vlfw.datasets.shard_sources import folder_samples, shapes_cc3m_samples
    from vlfw.datasets.shards import brace_spec, write_shards

    if args.samples_per_shard < 1:
        raise VlfwError(f"--samples-per-shard must be an integer >= 1, got {args.samples_per_shard}")
    if args.source == "shapes":
        parts = {"train": shapes_cc3m_samples(args.size, args.seed, "train"),
                 "val": shapes_cc3m_samples(args.size, args.seed, "val")}
        folders = {split: os.path.join(args.out, split) for split in parts}
        skipped: dict[str, int] = {}
    else:
        skipped = {}
        parts = {"train": folder_samples(args.source, skipped)}
        folders = {"train": args.out}
    for split, samples in parts.items():
        written = write_shards(samples, folders[split], args.samples_per_shard)
        if not written:
            raise VlfwError(f"--source {args.source}: no image + caption pairs found for {split}; nothing written")
        total = sum(n for _, n in written)
        print(f"{split}: {total} samples in {len(written)} shard(s): {brace_spec([p for p, _ in written])}")
    for reason, count in skipped.items():
        print(f"left out {count} {reason}")
    return 0


def _shapes(args: argparse.Namespace) -> int:
    from vlfw.world.cache import ensure_world, read_manifest, world_dir

    if args.feature_dim is not None and args.feature_dim <= 0:
        raise VlfwError(f"--feature-dim must be a positive integer (the region feature size), got {args.feature_dim}")
    if args.seed < 0:
        raise VlfwError(f"--seed must be an integer >= 0, got {args.seed}")

    options = {} if args.feature_dim is None else {"feature_dim": args.feature_dim}
    final = world_dir(args.size, args.seed, args.cache_dir)
    start = time.perf_counter()
    root = ensure_world(args.size, args.seed, args.cache_dir, force=args.force, **options)
    elapsed = time.perf_counter() - start
    manifest = read_manifest(root)
    generated = manifest["timings"]["total"]
    if elapsed < 0.5 * generated:
        print(f"Shapes world {args.size} seed {args.seed} already present at {final} "
              f"(generated in {generated:.1f}s; use --force to regenerate)")
    else:
        images = sum(v for k, v in manifest["counts"].items() if k.endswith("_images") and isinstance(v, int))
        print(f"Shapes world {args.size} seed {args.seed} written to {root} in {elapsed:.1f}s "
              f"({images} COCO/Flickr images plus NLVR2, VCR and CC3M pools)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "shapes":
            return _shapes(args)
        if args.command == "shards":
            return _shards(args)
    except (VlfwError, OSError) as err:
        if args.debug:
            raise
        print(f"vlfw_prepare: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("vlfw_prepare: interrupted; nothing was left half-written in the cache", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
