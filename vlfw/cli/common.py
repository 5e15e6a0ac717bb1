"""What every vlfw command shares: one-line errors for user mistakes, tracebacks on --debug."""

from __future__ import annotations

import logging
import sys
import traceback
from typing import Callable, Sequence

from vlfw.errors import Preempted, VlfwError


def wants_debug(argv: Sequence[str]) -> bool:
    return "--debug" in argv or "debug=true" in argv or "debug=True" in argv


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")


def guarded_main(program: str, body: Callable[[list[str]], int | None], argv: Sequence[str] | None = None) -> int:
    """Run `body(args)`; a VlfwError becomes one line on stderr and exit code 2, a preemption
    (SIGTERM during training, after its checkpoint is written) one line and exit code 143."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = wants_debug(argv)
    args = [a for a in argv if a != "--debug"]
    try:
        return int(body(args) or 0)
    except VlfwError as exc:
        if debug:
            traceback.print_exc()
        message = str(exc).replace("\n", " ")
        print(f"{program}: error: {message}", file=sys.stderr)
        if not debug:
            print(f"{program}: (run with --debug for the full traceback)", file=sys.stderr)
        return 2
    except Preempted as exc:  # SIGTERM: a checkpoint was written, the job can be requeued
        print(f"{program}: {str(exc).replace(chr(10), ' ')}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{program}: interrupted", file=sys.stderr)
        return 130
