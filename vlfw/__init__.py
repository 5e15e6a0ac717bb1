"""vlfw: a plugin-based framework for vision-and-language research."""

__version__ = "0.1.0"


def load(path, device: str = "cpu", checkpoint=None, datasets=None):
    """A predictor of a trained run (a run directory or a checkpoint in one); see vlfw.inference."""
    from vlfw.inference.predictor import load as _load

    return _load(path, device=device, checkpoint=checkpoint, datasets=datasets)
