"""What the builders' prediction files share: writing JSON, mapping boxes back to the original
image, reading a prediction file back (vlfw_score). The layouts are listed in
docs/processors_and_metrics.md ("Scoring result files")."""

from __future__ import annotations

import json
from typing import Any

import torch

from vlfw.data.batch import Batch
from vlfw.datasets.records import path_manager
from vlfw.errors import DataError


def write_json(document: Any, path: str) -> None:
    """The prediction file as one JSON document."""
    with path_manager.open(path, "w") as handle:
        json.dump(document, handle)


def boxes_in_original_pixels(boxes: torch.Tensor, batch: Batch, visual: str) -> list:
    """xyxy boxes (B, ..., 4) of a batch -> nested lists in pixels of the original image.

    Region boxes (visual=regions) already are: they are written unchanged (exact float32 values).
    With visual=images the boxes were resized with the image (evaluation applies a plain resize):
    x is scaled back by width / tensor width, y by height / tensor height (`image_size` is the
    original (width, height)) and rounded to 2 decimals, which restores the native coordinates."""
    boxes = torch.as_tensor(boxes).detach().float().cpu()
    if visual != "images":
        return boxes.tolist()
    image = batch["image"]
    original = torch.as_tensor(batch["image_size"]).float().cpu().reshape(-1, 2)
    shown = torch.tensor([float(image.shape[-1]), float(image.shape[-2])])
    scale = (original / shown).repeat(1, 2).reshape(original.shape[0], *([1] * (boxes.dim() - 2)), 4)
    return torch.round(boxes.double() * scale.double(), decimals=2).tolist()


def read_prediction_json(path: str, what: str) -> Any:
    """The parsed prediction file; a missing or malformed one is one DataError naming it."""
    if not path_manager.isfile(path):
        raise DataError(f"predictions file not found: {path}")
    try:
        with path_manager.open(path, "r", encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not valid JSON at line {error.lineno} column {error.colno} ({error.msg}); "
                        f"expected {what}") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text; expected {what}") from None


def prediction_rows(path: str, what: str, fields: dict[str, tuple[type, ...]]) -> list[dict]:
    """A JSON list of objects, each with `fields` (name -> accepted types); one DataError naming
    the file and the first bad entry otherwise."""
    rows = read_prediction_json(path, what)
    if not isinstance(rows, list):
        raise DataError(f"{path}: expected a JSON list of {what}, got a {type(rows).__name__}")
    for position, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(f"{path}: entry {position} is not an object: expected {what}")
        for name, types in fields.items():
            value = row.get(name)
            if not isinstance(value, types) or isinstance(value, bool) and bool not in types:
                raise DataError(f"{path}: entry {position} has no valid {name!r} (got {value!r}); expected {what}")
    return rows


def keyed(rows: list[dict], key: str, path: str, normalize=str) -> dict[Any, dict]:
    """Rows by `normalize(row[key])`; a key given twice is an error."""
    out: dict[Any, dict] = {}
    for row in rows:
        value = normalize(row[key])
        if value in out:
            raise DataError(f"{path}: {key} {row[key]!r} is predicted more than once")
        out[value] = row
    return out


def require_coverage(predicted: dict, expected: list, path: str, where: str, key: str) -> None:
    """Predictions must cover exactly the examples of the annotations (like the official VQA
    evaluator): a missing or an unknown example is one error line with examples of each."""
    wanted = set(expected)
    missing = [k for k in expected if k not in predicted]
    extra = [k for k in predicted if k not in wanted]
    if missing or extra:
        raise DataError(f"{path}: predictions must cover exactly the {len(wanted)} examples of {where} by {key} "
                        f"({len(missing)} missing, e.g. {missing[:3]}; {len(extra)} unknown, e.g. {extra[:3]})")


def box_of(row: dict, name: str, path: str, where: Any) -> list[float]:
    """A [x1, y1, x2, y2] box of finite numbers from a prediction row."""
    box = row.get(name)
    if (not isinstance(box, list) or len(box) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")
                       for v in box)):
        raise DataError(f"{path}: {where}: {name!r} must be [x1, y1, x2, y2] (4 finite numbers), got {box!r}")
    return [float(v) for v in box]
