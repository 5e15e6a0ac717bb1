"""Imports the modules of this package that register components."""

from vlfw.processors import answers, image, masking, text  # noqa: F401
