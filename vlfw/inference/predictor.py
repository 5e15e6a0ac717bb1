"""`vlfw.load(path)`: a trained run as a predictor on raw images (or region features) and text.

    import vlfw
    predictor = vlfw.load("save/quickstart")
    predictor.vqa("image.jpg", "what colour is the circle?")   # [{"answer", "score"}, ...]
    predictor.nlvr2(left, right, "both images show a red square")
    predictor.entailment(image, "a dog is in the picture")
    predictor.ground(image, "the small blue triangle")          # {"box" [x1, y1, x2, y2], "score"}
    predictor.caption(image, num_beams=5)
    index = predictor.retrieval(); index.add_images(paths); index.search("a red circle")

The run's saved config rebuilds the datasets' processors and the model; the weights are the
run's best checkpoint (else its latest, else its safetensors export), loaded tensor by tensor
(weights_only / safetensors: nothing in them can run code). Every input goes through the
dataset's own evaluation mapper (`DatasetBuilder.predict_record`, vlfw.inference.inputs), and
the outputs are read as the evaluator reads them, so a prediction equals what evaluation gives on
the same sample.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from omegaconf import DictConfig

from vlfw.errors import CheckpointError, ConfigError, DataError
from vlfw.inference.inputs import FeatureLookup, Regions, describe, npy_regions, open_image, with_inputs

log = logging.getLogger("vlfw.inference")

# predictor method -> the tasks of the datasets it can serve
METHOD_TASKS = {
    "vqa": ("vqa",),
    "nlvr2": ("nlvr2",),
    "entailment": ("classification",),
    "ground": ("rec", "dense_rec", "grounding", "dense_grounding"),
    "caption": ("captioning",),
    "retrieval": ("retrieval",),
}
WEIGHT_FILES = ("checkpoints/best.pt", "best_model.safetensors")


@dataclass
class RunFiles:
    run_dir: Path
    config: Path
    weights: Path


def locate(path: str | os.PathLike, checkpoint: str | os.PathLike | None = None) -> RunFiles:
    """The config and weights of a run directory, or of a checkpoint inside one."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"no run directory or checkpoint at {path}")
    if path.is_file():
        weights = path
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    else:
        run_dir = path
        weights = Path(checkpoint) if checkpoint else None
    config = run_dir / "config.yaml"
    if not config.is_file():
        raise DataError(f"{path}: no config.yaml in {run_dir} (a vlfw run directory holds config.yaml, written "
                        "when the run starts, and checkpoints/)")
    if weights is None:
        from vlfw.runner.checkpoint import CheckpointManager

        candidates = [run_dir / WEIGHT_FILES[0]]
        try:
            last = CheckpointManager(run_dir).last_path()
        except CheckpointError:
            last = None
        candidates += [last] if last is not None else []
        candidates.append(run_dir / WEIGHT_FILES[1])
        weights = next((c for c in candidates if c.is_file()), None)
        if weights is None:
            raise DataError(f"{run_dir}: the run wrote no weights yet (no checkpoints/best.pt, no `last` checkpoint, "
                            "no best_model.safetensors)")
    elif not weights.is_file():
        raise DataError(f"checkpoint not found: {weights}")
    return RunFiles(run_dir, config, weights)


def load(path: str | os.PathLike, device: str = "cpu", checkpoint: str | os.PathLike | None = None,
         datasets: Sequence[str] | None = None) -> "Predictor":
    """A predictor of the run at `path` (a run directory, or a checkpoint in one)."""
    from vlfw.config import load_config
    from vlfw.datasets import prepare_sources
    from vlfw.runner.build import build_builders, build_model, build_task_infos
    from vlfw.runner.checkpoint import load_model_weights
    from vlfw.runner.distributed import resolve_device

    files = locate(path, checkpoint)
    overrides: dict[str, Any] = {"device": device}
    if datasets:
        overrides["datasets"] = list(datasets)
    config = load_config(config_path=str(files.config), overrides=overrides)
    prepare_sources(config)
    builders = build_builders(config)
    infos = build_task_infos(builders)
    model = build_model(config, infos)
    load_model_weights(model, files.weights, None if datasets else config)
    target = resolve_device(str(device), 0)
    model.to(target).eval()
    log.info("loaded %s (%s) from %s", config.model, ", ".join(builders), files.weights)
    return Predictor(config, builders, infos, model, target, files)


class Predictor:
    """A trained model and its datasets' processors; one method per kind of task (METHOD_TASKS).

    Each method takes the visual input(s) (see vlfw.inference.inputs) and text, or lists of them
    for a batch (`batch_size` at a time), and names the dataset to use with `dataset=` when the
    run trained several of the same task.
    """

    def __init__(self, config: DictConfig, builders: dict, task_infos: dict, model: torch.nn.Module,
                 device: torch.device, files: RunFiles | None = None, batch_size: int = 32) -> None:
        self.config = config
        self.builders = builders
        self.task_infos = task_infos
        self.model = model
        self.device = device
        self.files = files
        self.batch_size = int(batch_size)
        self._mappers: dict[str, Any] = {}
        self._lookup: FeatureLookup | None = None

    # -- what it can do -------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return str(self.config.model)

    def methods(self) -> dict[str, list[str]]:
        """Predictor method -> the run's datasets it can use."""
        out: dict[str, list[str]] = {}
        for method, tasks in METHOD_TASKS.items():
            names = [n for n, info in self.task_infos.items() if info.task in tasks
                     and (method != "entailment" or "entailment" in (info.labels or ()))]
            if names:
                out[method] = names
        return out

    def dataset_for(self, method: str, dataset: str | None = None) -> str:
        usable = self.methods().get(method, [])
        if dataset is not None:
            if dataset not in self.builders:
                raise ConfigError(f"this run has no dataset {dataset!r}; it has {', '.join(self.builders)}")
            if dataset not in usable:
                raise ConfigError(f"dataset {dataset!r} (task {self.task_infos[dataset].task}) cannot serve {method}; "
                                  f"datasets that can: {', '.join(usable) or 'none'}")
            return dataset
        if not usable:
            can = ", ".join(f"{m} ({', '.join(d)})" for m, d in self.methods().items()) or "nothing"
            raise ConfigError(f"this {self.model_name} run has no dataset for task {method!r} (it trained "
                              f"{', '.join(f'{n}: {i.task}' for n, i in self.task_infos.items())}); it can do: {can}")
        return usable[0]

    # -- inputs ---------------------------------------------------------------------------------
    def mapper(self, dataset: str):
        if dataset not in self._mappers:
            self._mappers[dataset] = self.builders[dataset].mapper("val")
        return self._mappers[dataset]

    def _feature_lookup(self) -> FeatureLookup:
        if self._lookup is None:
            readers = []
            for name in self.builders:
                reader = getattr(self.mapper(name), "features", None)
                if reader is not None and hasattr(reader, "has"):
                    readers.append((name, reader))
            self._lookup = FeatureLookup(readers)
        return self._lookup

    def visual(self, dataset: str, visual: Any, detector: Any = None) -> Any:
        """The user's visual input as what the dataset's mapper reads: a PIL image or region fields."""
        prepared = self._visual(dataset, visual, detector)
        expected = self.task_infos[dataset].region_feature_size
        if isinstance(prepared, dict) and expected and prepared["region_features"].shape[-1] != int(expected):
            raise DataError(f"{describe(visual)}: {prepared['region_features'].shape[-1]}-d region features, but this "
                            f"{self.model_name} model was trained on {expected}-d features ({dataset})")
        return prepared

    def _visual(self, dataset: str, visual: Any, detector: Any = None) -> Any:
        mapper = self.mapper(dataset)
        if mapper.visual == "images":
            if isinstance(visual, Regions):
                raise DataError(f"this {self.model_name} model reads images, not region features")
            return open_image(visual)
        max_regions = int(self.builders[dataset].config.features.max_regions)
        if isinstance(visual, Regions):
            return visual.fields(max_regions)
        if detector is not None:
            return detector.regions(open_image(visual)).fields(max_regions)
        if isinstance(visual, (str, os.PathLike)):
            path = str(visual)
            if path.endswith(".npy"):
                return npy_regions(path, max_regions)
            open_image(path)  # a missing or non-image file is named as such
            found = self._feature_lookup().find(path, max_regions)
            if found is not None:
                return found
            raise DataError(f"{path}: this {self.model_name} model reads region features, and no feature file of "
                            f"the run lists this image; give its features (an MMF .npy with its _info.npy, or "
                            "vlfw.inference.Regions) or a detector (vlfw.inference.detector)")
        raise DataError(f"this {self.model_name} model reads region features: give a feature .npy, an image of "
                        f"the run's data, or Regions; got {describe(visual)}")

    def samples(self, dataset: str, items: Sequence[tuple[Sequence[Any], dict]], detector: Any = None) -> list:
        """Samples of (visual inputs, text inputs) items through the dataset's evaluation mapper."""
        builder = self.builders[dataset]
        mapper = self.mapper(dataset)
        out = []
        for position, (visuals, texts) in enumerate(items):
            record, keys = builder.predict_record(texts)
            prepared = [self.visual(dataset, v, detector) for v in visuals]
            out.append(with_inputs(mapper, prepared, keys)(record, position, torch.Generator().manual_seed(0)))
        return out

    def batches(self, dataset: str, samples: list, generation: dict | None = None) -> Iterable[tuple[Any, dict]]:
        """(batch, model outputs) per `batch_size` samples, as the evaluator computes them."""
        from vlfw.registry import TASKS
        from vlfw.runner.step import PRECISIONS, autocast_context

        builder = self.builders[dataset]
        generative = TASKS.get(self.task_infos[dataset].task).generative
        precision = PRECISIONS[str(self.config.training.precision)]
        autocast = autocast_context(self.device, precision) if self.device.type == "cuda" else contextlib.nullcontext
        for start in range(0, len(samples), self.batch_size):
            batch = builder.collate(samples[start:start + self.batch_size]).to(self.device)
            with torch.inference_mode(), autocast():
                if generative:
                    options = dict(self.config.dataset_config[dataset].get("generation") or {})
                    options.update(generation or {})
                    outputs = {"generated_ids": self.model.generate(batch, **options)}
                else:
                    outputs = self.model(batch)
            yield batch, outputs

    def _run(self, method: str, dataset: str | None, items: list[tuple[list, dict]], detector: Any = None,
             generation: dict | None = None, **decode: Any) -> list[Any]:
        from vlfw.inference import decoders

        name = self.dataset_for(method, dataset)
        info = self.task_infos[name]
        results: list[Any] = []
        for batch, outputs in self.batches(name, self.samples(name, items, detector), generation):
            results.extend(decoders.decode(info.task, self, name, batch, outputs, **decode))
        return results

    # -- the tasks ------------------------------------------------------------------------------
    def vqa(self, image: Any, question: str | Sequence[str], top_k: int = 5, dataset: str | None = None,
            detector: Any = None) -> list:
        """Top answers [{"answer", "score"}] (score: the answer's sigmoid probability); a list of
        them for a list of questions (one image, or one image per question)."""
        questions, images, single = _broadcast(question, image)
        items = [([img], {"question": q}) for img, q in zip(images, questions)]
        out = self._run("vqa", dataset, items, detector, top_k=top_k)
        return out[0] if single else out

    def nlvr2(self, image_left: Any, image_right: Any, statement: str | Sequence[str], dataset: str | None = None,
              detector: Any = None) -> Any:
        """{"prediction": True|False, "score": P(True)} for the statement about the image pair."""
        statements, lefts, single = _broadcast(statement, image_left)
        _, rights, _ = _broadcast(statement, image_right)
        items = [([a, b], {"statement": s}) for a, b, s in zip(lefts, rights, statements)]
        out = self._run("nlvr2", dataset, items, detector)
        return out[0] if single else out

    def entailment(self, image: Any, hypothesis: str | Sequence[str], dataset: str | None = None,
                   detector: Any = None) -> Any:
        """{"label", "scores": {label: probability}} of the hypothesis given the image."""
        hypotheses, images, single = _broadcast(hypothesis, image)
        out = self._run("entailment", dataset, [([i], {"hypothesis": h}) for i, h in zip(images, hypotheses)], detector)
        return out[0] if single else out

    def ground(self, image: Any, expression: str | Sequence[str], boxes: Sequence[Sequence[float]] | None = None,
               top_k: int = 5, dataset: str | None = None, detector: Any = None) -> Any:
        """{"box" [x1, y1, x2, y2] original image pixels, "score", "boxes" top_k [{"box", "score"}]}.
        Candidate-box models choose among the region features' boxes or, on images, `boxes`
        (x, y, w, h for RefCOCO-style datasets, x1, y1, x2, y2 for Flickr30k Entities)."""
        expressions, images, single = _broadcast(expression, image)
        texts = [{"expression": e, "boxes": boxes} for e in expressions]
        out = self._run("ground", dataset, [([i], t) for i, t in zip(images, texts)], detector, top_k=top_k)
        return out[0] if single else out

    def caption(self, image: Any, num_beams: int | None = None, max_length: int | None = None,
                dataset: str | None = None, detector: Any = None) -> Any:
        """The generated caption (a list for a list of images); decoding options default to the
        dataset's `generation` config (what evaluation used)."""
        single = not isinstance(image, (list, tuple))
        images = [image] if single else list(image)
        overrides = {k: v for k, v in (("num_beams", num_beams), ("max_length", max_length)) if v is not None}
        out = self._run("caption", dataset, [([i], {}) for i in images], detector, generation=overrides)
        return out[0] if single else out

    def retrieval(self, dataset: str | None = None, detector: Any = None):
        """A RetrievalIndex: add images once, then search them by text (and texts by image)."""
        from vlfw.inference.retrieval import RetrievalIndex

        return RetrievalIndex(self, self.dataset_for("retrieval", dataset), detector)


def _broadcast(text: str | Sequence[str], visual: Any) -> tuple[list[str], list[Any], bool]:
    """(texts, one visual per text, whether the call was for one item)."""
    single = isinstance(text, str)
    texts = [text] if single else [str(t) for t in text]
    if isinstance(visual, (list, tuple)):
        if len(visual) != len(texts):
            raise DataError(f"{len(visual)} images for {len(texts)} texts: give one image, or one per text")
        visuals = list(visual)
    else:
        visuals = [visual] * len(texts)
    return texts, visuals, single
