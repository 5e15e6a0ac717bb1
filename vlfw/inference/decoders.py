"""Model outputs -> a predictor's answers, read the way the evaluator's metrics read them.

One decoder per task (`register(task)`); a plugin adds one for its own task the same way. A task
without a decoder falls back to its dataset builder's `format_predictions` rows (the official
submission format), which is how the FIBER plugin's dense box tasks are answered.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from vlfw.metrics.rec import masked_region_logits

DECODERS: dict[str, Callable[..., list[Any]]] = {}


def register(*tasks: str) -> Callable:
    def mark(function: Callable) -> Callable:
        for task in tasks:
            DECODERS[task] = function
        return function

    return mark


def decode(task: str, predictor: Any, dataset: str, batch: Any, outputs: dict, **options: Any) -> list[Any]:
    function = DECODERS.get(task)
    if function is not None:
        return function(predictor, dataset, batch, outputs, **options)
    return predictor.builders[dataset].format_predictions(batch, outputs)


@register("vqa")
def vqa(predictor: Any, dataset: str, batch: Any, outputs: dict, top_k: int = 5) -> list[list[dict]]:
    answers = predictor.task_infos[dataset].answers
    probabilities = torch.sigmoid(outputs["logits"].float()).cpu()
    k = max(1, min(int(top_k), probabilities.shape[-1]))
    # ties broken by the lower answer index, as argmax does (the evaluator's answer is argmax)
    order = torch.sort(probabilities, dim=-1, descending=True, stable=True)
    return [[{"answer": answers[int(i)], "score": round(float(p), 6)} for p, i in zip(values[:k], indices[:k])]
            for values, indices in zip(order.values, order.indices)]


@register("classification", "nlvr2")
def labels(predictor: Any, dataset: str, batch: Any, outputs: dict) -> list[dict]:
    info = predictor.task_infos[dataset]
    names = list(info.labels or range(info.num_outputs))
    logits = outputs["logits"].float().cpu()
    probabilities = torch.softmax(logits, dim=-1)
    best = logits.argmax(dim=-1).tolist()
    if info.task == "nlvr2":
        return [{"prediction": names[b] == "True", "score": round(float(p[names.index("True")]), 6)}
                for b, p in zip(best, probabilities)]
    return [{"label": str(names[b]), "scores": {str(n): round(float(v), 6) for n, v in zip(names, p)}}
            for b, p in zip(best, probabilities)]


def original_boxes(batch: Any, boxes: torch.Tensor) -> torch.Tensor:
    """Candidate boxes (B, N, 4) in original image pixels: region boxes already are; boxes moved
    with the evaluation image transform (a plain resize) are scaled back."""
    if "image" not in batch:
        return boxes
    original = torch.as_tensor(batch["image_size"]).float().reshape(-1, 2)
    image = batch["image"]
    current = torch.tensor([float(image.shape[-1]), float(image.shape[-2])]).expand_as(original)
    scale = (original / current).repeat(1, 2)
    return boxes * scale[:, None, :]


@register("rec", "grounding")
def candidate_boxes(predictor: Any, dataset: str, batch: Any, outputs: dict, top_k: int = 5) -> list[dict]:
    logits = masked_region_logits(outputs["region_logits"], batch.get("region_mask")).cpu()
    boxes = original_boxes(batch, torch.as_tensor(batch["region_boxes"]).float().cpu())
    scores = torch.sigmoid(logits)
    results = []
    for row in range(len(logits)):
        real = int(torch.isfinite(logits[row]).sum())
        order = torch.sort(logits[row], descending=True, stable=True).indices[: max(1, min(int(top_k), real))]
        ranked = [{"box": [round(float(v), 2) for v in boxes[row, i]], "score": round(float(scores[row, i]), 6),
                   "region": int(i)} for i in order]
        results.append({"box": ranked[0]["box"], "score": ranked[0]["score"], "region": ranked[0]["region"],
                        "boxes": ranked})
    return results


@register("captioning")
def captions(predictor: Any, dataset: str, batch: Any, outputs: dict) -> list[str]:
    from vlfw.metrics.captioning import CaptionMetrics

    reader = CaptionMetrics(task_info=predictor.task_infos[dataset])
    return [reader.decode(ids) for ids in outputs["generated_ids"].cpu()]


@register("dense_rec")
def dense_box(predictor: Any, dataset: str, batch: Any, outputs: dict, top_k: int = 5) -> list[dict]:
    rows = predictor.builders[dataset].format_predictions(batch, outputs)
    return [{"box": row["box"], "score": row.get("score"), "boxes": [{"box": row["box"], "score": row.get("score")}]}
            for row in rows]


@register("dense_grounding")
def dense_boxes(predictor: Any, dataset: str, batch: Any, outputs: dict, top_k: int = 5) -> list[dict]:
    rows = predictor.builders[dataset].format_predictions(batch, outputs)
    results = []
    for row in rows:
        ranked = [{"box": b, "score": round(float(s), 6)} for b, s in zip(row["boxes"], row["scores"])][: int(top_k)]
        if not ranked:
            results.append({"box": None, "score": None, "boxes": []})
            continue
        results.append({"box": ranked[0]["box"], "score": ranked[0]["score"], "boxes": ranked})
    return results
