"""Models: `BaseModel` (what every model derives from), `provides` (its per-task features)."""

from vlfw.models.base import BaseModel, provides

__all__ = ["BaseModel", "provides"]
