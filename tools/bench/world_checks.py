"""Does the Shapes world leak labels through its texts, and are its referring expressions unique?

Runs the checks of vlfw.world.checks (and the detector probe of vlfw.world.probe) on a world:

    python tools/bench/world_checks.py --size default [--seed 0] [--root DIR] [--probe-images 1500]

`--root` checks a world written by `generate_world` (or an older generator version) instead of
the cached one; its scenes are re-planned from `--size` and `--seed`. Prints: SNLI-VE
hypothesis-only dev accuracy, NLVR2 sizes / True share / statement-only dev accuracy, the share
of RefCOCO/+/g expressions that do not fit exactly their referent, and the detector's class
accuracy on true objects with the linear colour / shape probes.
"""

from __future__ import annotations

import argparse

from vlfw.world.cache import ensure_world
from vlfw.world.checks import nlvr2_text_only, planned_scenes, refcoco_ambiguity, snli_ve_hypothesis_only
from vlfw.world.probe import probe_world


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="default")
    parser.add_argument("--seed", type=int, default=0, help="the world's seed")
    parser.add_argument("--root", default=None, help="a world directory (default: the cached world)")
    parser.add_argument("--probe-images", type=int, default=1500, help="COCO train images for the probe; 0: skip")
    args = parser.parse_args()
    root = args.root or ensure_world(args.size, args.seed)
    s = snli_ve_hypothesis_only(root)
    print(f"SNLI-VE hypothesis-only dev accuracy: {s['accuracy']:.1f}% (majority {s['majority']:.1f}%, "
          f"{s['train']} train / {s['test']} dev)")
    n = nlvr2_text_only(root)
    print("NLVR2: " + ", ".join(f"{sp} {n[sp + '_examples']} examples / {n[sp + '_sets']} sets "
                                 f"({n[sp + '_true']:.1f}% True)" for sp in ("train", "dev", "test1")))
    print(f"NLVR2 statement-only dev accuracy: {n['accuracy']:.1f}% (majority {n['majority']:.1f}%)")
    for name, r in refcoco_ambiguity(root, planned_scenes(args.size, args.seed)).items():
        print(f"{name}: {r['expressions']} expressions, {r['not_unique_percent']:.2f}% not unique to their "
              f"referent (fit none {r['none']}, several {r['several']}, another object {r['other']}, "
              f"unparsed {r['unparsed']})")
    if args.probe_images:
        p = probe_world(root, args.probe_images)
        print(f"detector: class right for {p['class_right']:.1f}% of {p['objects']} matched true objects; "
              f"linear probes colour {p['colour']:.1f}%, shape {p['shape']:.1f}%, size {p['size']:.1f}% "
              f"(majority {p['size_majority']:.1f}%; {p['held_out']} held out)")


if __name__ == "__main__":
    main()
