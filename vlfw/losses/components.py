"""Imports the modules of this package that register components."""
import vlfw.losses.standard  # noqa: F401
