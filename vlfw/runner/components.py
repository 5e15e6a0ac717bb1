"""Imports the modules of this package that register components."""
import vlfw.runner.callbacks  # noqa: F401  (the Callback base for CALLBACKS)
import vlfw.runner.optim  # noqa: F401  (OPTIMIZERS: adamw, sgd)
import vlfw.runner.schedulers  # noqa: F401  (SCHEDULERS: warmup_linear, warmup_cosine, constant)
