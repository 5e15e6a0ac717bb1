"""The processor interface: a configured callable applied to one record's field."""

from __future__ import annotations

from typing import Any


class Processor:
    """Built from keyword arguments (its config node); called on one item."""

    def __init__(self, **params: Any) -> None:
        self.params = params

    def __call__(self, item: Any) -> Any:
        raise NotImplementedError
