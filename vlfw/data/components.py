"""Imports the modules of this package that register components."""
