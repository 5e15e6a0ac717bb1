"""Model cards: what `vlfw_list models --details` says about each registered model and size.

A card is built from what every model already declares, so a plugin's models get one without
the core knowing them:

* sizes: the values of ``CONFIG_CHOICES["size"]`` (a model without it has one size, "default");
* tasks: the ``@provides`` methods (``BaseModel.supported_tasks``), with each task's description;
* visual input: ``VISUAL_INPUTS`` ("images", "regions"; empty: text only; None: not declared);
* ``CARD_CONFIG``: config values that make building the model cheap for counting (no pretrained
  weights read), merged over ``{"size": <size>}``.

Parameter counts come from the model built on PyTorch's meta device (no memory, no weights) for
Shapes-shaped datasets: one dataset per supported task, the answer and label spaces, region
feature size and detector classes of the Shapes world, the bundled BERT vocabulary. Memory per
sample cannot be measured on the meta device: tools/bench/model_cards.py measures it and stores
the figures in model_cards.json next to this module, keyed by "model/size".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch.overrides import TorchFunctionMode

MEASUREMENTS_FILE = Path(__file__).with_name("model_cards.json")
DEFAULT_SIZE = "default"  # the one size of a model without CONFIG_CHOICES["size"]
VISUAL_WORDS = {"images": "images", "regions": "region features"}

# Shapes-world values of the core builders' TaskInfo (vqa2, snli_ve, nlvr2, vcr on the world's
# generated data; region features of the world's seeded detector in the npy layout)
SHAPES_REGION_FEATURE_SIZE = 256
SHAPES_DETECTOR_CLASSES = 8
SHAPES_TASK_FIELDS: dict[str, dict[str, Any]] = {
    "vqa": {"num_answers": 22},
    "classification": {"num_labels": 3, "labels": ("entailment", "neutral", "contradiction")},
    "nlvr2": {"num_labels": 2, "labels": ("False", "True"), "num_images": 2},
    "vcr": {"num_choices": 4},
}


def model_sizes(model_class: type) -> list[str]:
    """The sizes a model supports: CONFIG_CHOICES["size"], else one default size."""
    choices = (getattr(model_class, "CONFIG_CHOICES", None) or {}).get("size")
    return [str(s) for s in choices] if choices else [DEFAULT_SIZE]


def visual_inputs(model_class: type) -> tuple[str, ...] | None:
    """The model's declared visual inputs; () = text only, None = the model does not say."""
    declared = getattr(model_class, "VISUAL_INPUTS", None)
    return None if declared is None else tuple(str(v) for v in declared)


def reference_task_infos(model_class: type, visual: str | None) -> dict[str, Any]:
    """One Shapes-shaped TaskInfo per task the model supports, all with visual input `visual`."""
    from vlfw.tasks import TaskInfo
    from vlfw.testing import bert_text_info

    regions = {"region_feature_size": SHAPES_REGION_FEATURE_SIZE,
               "detector_classes": SHAPES_DETECTOR_CLASSES} if visual == "regions" else {}
    return {f"shapes_{task}": TaskInfo(task=task, dataset=f"shapes_{task}", visual=visual, text=bert_text_info(),
                                       **regions, **SHAPES_TASK_FIELDS.get(task, {}))
            for task in sorted(model_class.supported_tasks())}


def card_config(model_class: type, size: str) -> dict[str, Any]:
    config = {} if size == DEFAULT_SIZE else {"size": size}
    config.update(dict(getattr(model_class, "CARD_CONFIG", None) or {}))
    return config


class _LargeTensorsOnMeta(TorchFunctionMode):
    """Tensors made by size (torch.empty, zeros, ones, full, rand, randn) with at least
    `threshold` elements go to the meta device; everything else stays on the CPU. For
    constructors that read a small tensor's values (torch.linspace(...).tolist()), which the
    plain meta device cannot give."""

    SIZED = frozenset({torch.empty, torch.zeros, torch.ones, torch.full, torch.rand, torch.randn})

    def __init__(self, threshold: int = 4096) -> None:
        super().__init__()
        self.threshold = threshold

    @staticmethod
    def _numel(args: tuple, kwargs: Mapping[str, Any]) -> int:
        shape = kwargs.get("size")
        if shape is None and args:
            shape = args[0] if isinstance(args[0], (tuple, list, torch.Size)) else \
                [a for a in args if isinstance(a, int) and not isinstance(a, bool)]
        count = 1
        for dim in shape or ():
            count *= int(dim)
        return count

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in self.SIZED and kwargs.get("device") is None and self._numel(args, kwargs) >= self.threshold:
            kwargs["device"] = "meta"
        return func(*args, **kwargs)


def build_for_card(model_class: type, size: str, visual: str | None, device: str | None = None,
                   task_infos: Mapping[str, Any] | None = None) -> torch.nn.Module:
    """The model of `size` for the reference datasets (or `task_infos`). `device` None: on the
    meta device where the constructor allows, else with its large tensors there, else on the CPU."""
    infos = dict(task_infos) if task_infos is not None else reference_task_infos(model_class, visual)
    config = card_config(model_class, size)
    if device is not None:
        with torch.device(device):
            return model_class(config, infos)
    from vlfw.errors import VlfwError

    for placement in (lambda: torch.device("meta"), _LargeTensorsOnMeta):
        try:
            with placement():
                return model_class(config, infos)
        except VlfwError:
            raise  # a configuration the model refuses: building elsewhere does not help
        except Exception:  # noqa: BLE001 - the constructor needs real data somewhere: try the next placement
            continue
    return model_class(config, infos)


def parameter_counts(model: torch.nn.Module) -> tuple[int, dict[str, int], dict[str, int]]:
    """(total, per top-level submodule, per dataset head). A parameter shared by two submodules
    (tied embeddings) counts once, in the first that names it, so the parts sum to the total."""
    parts: dict[str, int] = {}
    heads: dict[str, int] = {}
    total = 0
    for name, parameter in model.named_parameters():  # each parameter once
        count = parameter.numel()
        total += count
        path = name.split(".")
        parts[path[0]] = parts.get(path[0], 0) + count
        if path[:2] == ["heads", "heads"] and len(path) > 2:
            heads[path[2]] = heads.get(path[2], 0) + count
    return total, parts, heads


def load_measurements(path: str | Path | None = None) -> dict[str, Any]:
    """The measured figures, {"model/size": {...}}; {} when the file is missing or unreadable."""
    try:
        data = json.loads(Path(path or MEASUREMENTS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return dict(data.get("models", {})) if isinstance(data, dict) else {}


@dataclass
class SizeCard:
    size: str
    visual: str | None
    total: int | None = None
    parts: dict[str, int] = field(default_factory=dict)
    heads: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    memory: dict[str, Any] | None = None


@dataclass
class ModelCard:
    name: str
    origin: str
    tasks: list[str]
    visual: tuple[str, ...] | None
    sizes: list[SizeCard]


def model_card(name: str, measurements: Mapping[str, Any] | None = None) -> ModelCard:
    """The card of registered model `name` (each size counted on the meta device)."""
    from vlfw.registry import MODELS

    entry = MODELS.entry(name)
    model_class = entry.obj
    visuals = visual_inputs(model_class)
    # counted with the first declared visual input (the model's main one); text only: none
    visual = visuals[0] if visuals else None
    measured = load_measurements() if measurements is None else measurements
    sizes = []
    for size in model_sizes(model_class):
        card = SizeCard(size=size, visual=visual, memory=measured.get(f"{name}/{size}"))
        try:
            card.total, card.parts, card.heads = parameter_counts(build_for_card(model_class, size, visual))
        except Exception as exc:  # noqa: BLE001 - one model's failure must not hide the other cards
            card.error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        sizes.append(card)
    return ModelCard(name=name, origin=str(entry.origin), tasks=sorted(model_class.supported_tasks()),
                     visual=visuals, sizes=sizes)


def human(count: int | float) -> str:
    """12345678 -> '12.3M' (three significant digits)."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(count) >= scale:
            return f"{count / scale:.3g}{unit}"
    return str(int(count))


def _memory_lines(memory: Mapping[str, Any] | None) -> list[str]:
    if not memory:
        return ["memory: not measured (python tools/bench/model_cards.py)"]
    visual = VISUAL_WORDS.get(memory.get("visual"), memory.get("visual") or "text only")
    where = (f"{memory.get('device', '?')}, {memory.get('threads', '?')} thread(s), task {memory.get('task', '?')} "
             f"on {visual}, Shapes {memory.get('world', '?')} world"
             + (f", {human(memory['parameters'])} parameters with that task's head only"
                if memory.get("parameters") else ""))
    lines = [f"memory, peak RSS growth of one step ({where}):"]
    for mode in ("training", "inference"):
        figures = memory.get(mode)
        if not figures:
            lines.append(f"  {mode:<9} not measured")
            continue
        lines.append(f"  {mode:<9} batch 1 {figures['batch_1_mb']:.1f} MiB, batch 8 {figures['batch_8_mb']:.1f} MiB, "
                     f"per sample {figures['per_sample_mb']:.1f} MiB")
    return lines


def format_card(card: ModelCard) -> str:
    from vlfw.registry import TASKS

    if card.visual is None:
        visual = "not declared (VISUAL_INPUTS)"
    else:
        visual = " or ".join(VISUAL_WORDS.get(v, v) for v in card.visual) or "none (text only)"
    lines = [f"{card.name}  ({card.origin})", f"  visual input: {visual}", "  tasks:"]
    for task in card.tasks:
        try:
            description = TASKS.get(task).description
        except Exception:  # noqa: BLE001 - a task without a registered spec still lists
            description = ""
        lines.append(f"    {task:<16} {description}".rstrip())
    for size in card.sizes:
        counted = f", counted for {VISUAL_WORDS.get(size.visual, size.visual)}" if size.visual else ""
        if size.error is not None:
            lines.append(f"  size {size.size}: cannot build it for counting: {size.error}")
        else:
            parts = ", ".join(f"{k} {human(v)}" for k, v in size.parts.items())
            body = size.total - size.parts.get("heads", 0)
            with_heads = f" with one head per task{counted}; {human(body)} without the heads" if size.heads else counted
            lines.append(f"  size {size.size}: {human(size.total)} parameters ({size.total:,}{with_heads})")
            lines.append(f"    per submodule: {parts}")
            if size.heads:
                lines.append("    heads: " + ", ".join(f"{k.removeprefix('shapes_')} {human(v)}"
                                                      for k, v in size.heads.items()))
        lines.extend("    " + line for line in _memory_lines(size.memory))
    return "\n".join(lines)
