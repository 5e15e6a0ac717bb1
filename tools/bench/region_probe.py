"""Can a linear layer read an object's colour and shape from the world's region features?

Runs vlfw.world.probe on a generated world and prints the held-out accuracies:

    python tools/bench/region_probe.py --size default --images 1500
"""

from __future__ import annotations

import argparse

from vlfw.world.cache import ensure_world
from vlfw.world.probe import probe_world


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="default")
    parser.add_argument("--seed", type=int, default=0, help="the world's seed")
    parser.add_argument("--images", type=int, default=1500)
    args = parser.parse_args()
    r = probe_world(ensure_world(args.size, args.seed), args.images)
    print(f"{r['objects']} objects from {r['images']} images, {r['feature_dim']}-d features; "
          f"{r['train']} train / {r['held_out']} held out")
    for name in ("colour", "shape"):
        print(f"{name}: held-out accuracy {r[name]:.1f}% (majority {r[name + '_majority']:.1f}%)")


if __name__ == "__main__":
    main()
