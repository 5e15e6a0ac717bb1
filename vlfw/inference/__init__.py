"""Using a trained model outside `vlfw_run`: `vlfw.load(run_dir)` -> a Predictor (vqa, nlvr2,
entailment, ground, caption, retrieval), visual inputs (images, region features, a detector),
pictures of predictions. See docs/inference.md."""

from vlfw.inference.inputs import Regions
from vlfw.inference.predictor import METHOD_TASKS, Predictor, load

__all__ = ["METHOD_TASKS", "Predictor", "Regions", "load"]
