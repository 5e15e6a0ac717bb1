"""Imports the modules of this package that register components."""
import vlfw.models.baselines  # noqa: F401
import vlfw.modules.heads  # noqa: F401
import vlfw.modules.encoders  # noqa: F401
