"""Dataset builders (one module per benchmark), the records/mapper/dataset base and readers."""

from vlfw.datasets.sources import prepare_sources

__all__ = ["prepare_sources"]
