"""Imports the modules of this package that register components."""

from vlfw.metrics import captioning, classification, grounding, rec, retrieval, vcr, vqa  # noqa: F401
