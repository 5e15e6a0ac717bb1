"""vlfw: a plugin-based framework for vision-and-language research."""

__version__ = "0.1.0"
