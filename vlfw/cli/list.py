"""`vlfw_list`: every registered component by kind, with the plugin that provided it."""

from __future__ import annotations

import sys
from typing import Sequence

from vlfw.cli.common import guarded_main


def _list(args: list[str]) -> int:
    from vlfw import plugins
    from vlfw.registry import ALL_REGISTRIES

    kinds = args or list(ALL_REGISTRIES)
    for kind in kinds:
        if kind not in ALL_REGISTRIES:
            from vlfw.errors import VlfwError, did_you_mean

            raise VlfwError(f"unknown kind {kind!r}.{did_you_mean(kind, ALL_REGISTRIES)} Kinds: {', '.join(ALL_REGISTRIES)}")
        entries = list(ALL_REGISTRIES[kind].entries())
        print(f"{kind} ({len(entries)}):")
        for entry in entries:
            print(f"  {entry.name:<28} {entry.origin}")
    failures = plugins.failed_plugins()
    if failures:
        print("plugins that failed to load:")
        for failure in failures:
            print(f"  {failure}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return guarded_main("vlfw_list", _list, argv)


if __name__ == "__main__":
    sys.exit(main())
