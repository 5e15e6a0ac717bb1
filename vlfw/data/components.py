"""Imports the modules of this package that register components."""
import vlfw.data.multitask  # noqa: F401  (iteration strategies)
