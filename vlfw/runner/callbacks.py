"""Callbacks: hooks into the training loop, registered in CALLBACKS and listed in
`training.callbacks` (names, or {type, params} mappings)."""

from __future__ import annotations

from typing import Any, Mapping

from vlfw.registry import CALLBACKS


class Callback:
    """Override any hook; the runner calls them on every rank, in list order."""

    def __init__(self, **params: Any) -> None:
        self.params = params

    def on_train_start(self, trainer: Any) -> None:
        """After the model, optimizer and data are ready (and a resume was loaded)."""

    def on_update_end(self, trainer: Any, update: int, losses: Mapping[str, float]) -> None:
        """After optimizer update `update` (1-based)."""

    def on_evaluation_end(self, trainer: Any, split: str, metrics: Mapping[str, float]) -> None:
        """After an evaluation of `split` with its gathered metrics."""

    def on_checkpoint_saved(self, trainer: Any, path: str) -> None:
        """After a checkpoint file is complete and the `last` pointer names it."""

    def on_train_end(self, trainer: Any) -> None:
        """After the training loop (before the final test)."""


def build_callbacks(specs: Any) -> list[Callback]:
    callbacks = []
    for spec in specs or []:
        if isinstance(spec, str):
            callbacks.append(CALLBACKS.get(spec)())
        else:
            callbacks.append(CALLBACKS.get(str(spec["type"]))(**dict(spec.get("params") or {})))
    return callbacks
