"""The shared runner: training and evaluation loops, optim, checkpoints, distributed, logging."""

from __future__ import annotations

from typing import Any


def run(config: Any) -> dict[str, float]:
    """Run `config.run_type` with the components the config names; returns the final metrics."""
    from vlfw.runner.launch import run as _run

    return _run(config)


__all__ = ["run"]
