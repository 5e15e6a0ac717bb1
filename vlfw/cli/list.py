"""`vlfw_list`: every registered component by kind, with the plugin that provided it.

`vlfw_list models --details`: a card per model (vlfw.models.cards): its tasks, visual input,
parameters per size and the memory measured by tools/bench/model_cards.py.
"""

from __future__ import annotations

import sys
from typing import Sequence

from vlfw.cli.common import guarded_main


def _list(args: list[str]) -> int:
    from vlfw.registry import ALL_REGISTRIES

    details = "--details" in args
    args = [a for a in args if a != "--details"]
    if details:
        if any(a != "models" for a in args):
            from vlfw.errors import VlfwError

            raise VlfwError("--details describes models only: vlfw_list models --details")
        return _model_cards()
    kinds = args or list(ALL_REGISTRIES)
    for kind in kinds:
        if kind not in ALL_REGISTRIES:
            from vlfw.errors import VlfwError, did_you_mean

            raise VlfwError(f"unknown kind {kind!r}.{did_you_mean(kind, ALL_REGISTRIES)} Kinds: {', '.join(ALL_REGISTRIES)}")
        entries = list(ALL_REGISTRIES[kind].entries())
        print(f"{kind} ({len(entries)}):")
        for entry in entries:
            print(f"  {entry.name:<28} {entry.origin}")
    _print_failures()
    return 0


def _print_failures() -> None:
    from vlfw import plugins

    failures = plugins.failed_plugins()
    if failures:
        print("plugins that failed to load:")
        for failure in failures:
            print(f"  {failure}")


def _model_cards() -> int:
    from vlfw.models.cards import format_card, load_measurements, model_card
    from vlfw.registry import MODELS

    measurements = load_measurements()
    entries = list(MODELS.entries())
    print(f"models ({len(entries)}); parameters counted for Shapes-shaped datasets, one per task "
          "(BERT vocabulary, the world's answer spaces):")
    for entry in entries:
        print(format_card(model_card(entry.name, measurements)))
        print()
    _print_failures()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return guarded_main("vlfw_list", _list, argv)


if __name__ == "__main__":
    sys.exit(main())
