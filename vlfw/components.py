"""The core's own components. The `vlfw` entry point names this module, so the core
registers its built-ins through the same plugin mechanism as every third-party package."""

import importlib

_MODULES = [
    "vlfw.processors.components",
    "vlfw.datasets.components",
    "vlfw.metrics.components",
    "vlfw.losses.components",
    "vlfw.models.components",
    "vlfw.runner.components",
    "vlfw.data.components",
]

for _name in _MODULES:
    importlib.import_module(_name)
