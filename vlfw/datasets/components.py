"""Imports the modules of this package that register components (the benchmark builders)."""

from vlfw.datasets import captions, cc3m, flickr30k_entities, nlvr2, refcoco, snli_ve, vcr, vqa2  # noqa: F401
