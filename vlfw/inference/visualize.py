"""Pictures of predictions (PIL): the predicted box of a referring expression, or an answer with
the image regions that mattered most for it.

Which regions "mattered" is measured, not guessed from attention: each region (region-feature
models) or each cell of a grid (image models) is removed in turn, and its importance is how
much the predicted answer's probability drops without it (occlusion sensitivity).
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import torch
from PIL import Image, ImageDraw, ImageFont

from vlfw.errors import DataError
from vlfw.inference.inputs import open_image

MIN_SIDE = 384  # small images (the Shapes world's are 128 px) are drawn enlarged
COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4"]


def _canvas(image: Image.Image) -> tuple[Image.Image, float]:
    scale = max(1.0, MIN_SIDE / min(image.size))
    if scale > 1.0:
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.NEAREST)
    return image.convert("RGB"), scale


def _font(size: int = 14):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: no sized default font
        return ImageFont.load_default()


def _wrap(text: str, font: Any, width: float) -> list[str]:
    """`text` broken at spaces into lines no wider than `width` pixels."""
    lines, current = [], ""
    for word in text.split(" "):
        trial = f"{current} {word}" if current else word
        if current and font.getlength(trial) > width:
            lines.append(current)
            current = word
        else:
            current = trial
    return lines + [current]


def _banner(image: Image.Image, lines: Sequence[str]) -> Image.Image:
    """The image with a white strip of text lines under it."""
    font = _font()
    lines = [piece for line in lines for piece in _wrap(str(line), font, image.width - 12)]
    height = 8 + 20 * len(lines)
    out = Image.new("RGB", (image.width, image.height + height), "white")
    out.paste(image, (0, 0))
    draw = ImageDraw.Draw(out)
    for n, line in enumerate(lines):
        draw.text((6, image.height + 4 + 20 * n), line, fill="black", font=font)
    return out


def draw_boxes(image: Image.Image, boxes: Sequence[dict], lines: Sequence[str]) -> Image.Image:
    """`boxes`: [{"box" [x1, y1, x2, y2] original pixels, "label"}], the first drawn thickest."""
    canvas, scale = _canvas(image)
    draw = ImageDraw.Draw(canvas)
    font = _font(13)
    for n, item in enumerate(boxes):
        x1, y1, x2, y2 = (float(v) * scale for v in item["box"])
        colour = COLOURS[n % len(COLOURS)]
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=4 if n == 0 else 2)
        label = item.get("label")
        if label:
            draw.text((x1 + 3, max(0.0, y1 - 16)), str(label), fill=colour, font=font)
    return _banner(canvas, lines)


def save(picture: Image.Image, path: str | os.PathLike) -> str:
    path = str(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise DataError(f"--visualize {path}: folder {folder} does not exist")
    tmp = f"{path}.tmp.png"
    try:
        picture.save(tmp, format="PNG")
        os.replace(tmp, path)
    except OSError as error:
        raise DataError(f"cannot write {path}: {error.strerror or error}") from None
    return path


def ground_picture(image: Any, expression: str, result: dict) -> Image.Image:
    boxes = [{"box": b["box"], "label": f"{b['score']:.2f}" if b.get("score") is not None else None}
             for b in result.get("boxes", [])[:3]]
    if result.get("box") is None:
        boxes = []
    return draw_boxes(open_image(image), boxes, [f"\"{expression}\"",
                                                 "best box (thick) and the next two candidates, with scores"])


def occlusion_importance(predictor: Any, image: Any, question: str, answer: str, dataset: str | None = None,
                         grid: int = 4, detector: Any = None) -> list[dict]:
    """[{"box", "importance"}], most important first: the drop of P(answer) when that region (or
    grid cell, for image models) is removed."""
    from vlfw.inference.inputs import Regions

    name = predictor.dataset_for("vqa", dataset)
    answers = list(predictor.task_infos[name].answers)
    if answer not in answers:
        raise DataError(f"{answer!r} is not one of the model's answers")
    column = answers.index(answer)
    mapper = predictor.mapper(name)
    variants: list[Any] = []
    boxes: list[list[float]] = []
    if mapper.visual == "regions":
        fields = predictor.visual(name, image, detector)
        features, region_boxes = fields["region_features"], fields["region_boxes"]
        width, height = (float(v) for v in fields["image_size"])
        probs = fields.get("region_class_probs")
        keep_all = torch.ones(len(features), dtype=torch.bool)
        variants.append(Regions(features, region_boxes, width, height, probs))
        for i in range(len(features)):
            keep = keep_all.clone()
            keep[i] = False
            if not keep.any():
                continue
            variants.append(Regions(features[keep], region_boxes[keep], width, height,
                                    None if probs is None else probs[keep]))
            boxes.append([float(v) for v in region_boxes[i]])
    else:
        picture = open_image(image)
        variants.append(picture)
        mean = tuple(int(c) for c in picture.resize((1, 1)).getpixel((0, 0)))
        for row in range(grid):
            for col in range(grid):
                box = [picture.width * col / grid, picture.height * row / grid,
                       picture.width * (col + 1) / grid, picture.height * (row + 1) / grid]
                hidden = picture.copy()
                ImageDraw.Draw(hidden).rectangle(box, fill=mean)
                variants.append(hidden)
                boxes.append(box)
    items = [([v], {"question": question}) for v in variants]
    scores = []
    for batch, outputs in predictor.batches(name, predictor.samples(name, items)):
        scores.extend(torch.sigmoid(outputs["logits"].float())[:, column].cpu().tolist())
    base = scores[0]
    ranked = sorted(({"box": b, "importance": round(base - s, 6)} for b, s in zip(boxes, scores[1:])),
                    key=lambda r: -r["importance"])
    return ranked


def vqa_picture(predictor: Any, image: Any, question: str, result: list[dict], dataset: str | None = None,
                top_regions: int = 3, detector: Any = None) -> Image.Image:
    answer = result[0]["answer"]
    ranked = occlusion_importance(predictor, image, question, answer, dataset, detector=detector)
    shown = [r for r in ranked[:top_regions] if r["importance"] > 0]
    boxes = [{"box": r["box"], "label": f"-{r['importance']:.2g}"} for r in shown]
    others = ", ".join(f"{r['answer']} {r['score']:.2f}" for r in result[1:4])
    lines = [f"Q: {question}", f"A: {answer} ({result[0]['score']:.2f}); then {others}",
             "boxes: regions whose removal lowers P(answer) most (the drop)" if shown else
             "no region's removal lowers P(answer)"]
    return draw_boxes(open_image(image), boxes, lines)


def text_picture(images: Sequence[Any], lines: Sequence[str]) -> Image.Image:
    """Images side by side (NLVR2 pairs) with the prediction under them."""
    canvases = [_canvas(open_image(i))[0] for i in images]
    width = sum(c.width for c in canvases) + 8 * (len(canvases) - 1)
    out = Image.new("RGB", (width, max(c.height for c in canvases)), "white")
    x = 0
    for c in canvases:
        out.paste(c, (x, 0))
        x += c.width + 8
    return _banner(out, lines)
