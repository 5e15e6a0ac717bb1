"""vlfw_predict: a trained run's prediction on an image (or two) and a text.

    vlfw_predict save/quickstart --task vqa --image x.jpg --question "what colour is the circle?"
    vlfw_predict save/quickstart --task nlvr2 --image left.png --image right.png --text "..."
    vlfw_predict save/quickstart --task entailment --image x.jpg --text "there is a red square"
    vlfw_predict save/quickstart --task ground --image x.jpg --text "the blue circle" --visualize out.png
    vlfw_predict save/captioner --task caption --image x.jpg --num-beams 5
    vlfw_predict save/vlmo --task retrieval --images folder/ --text "a red circle" --top-k 5

Prints a table (or `--json`, one JSON object). `--visualize PNG` draws the box (ground), the
answer with the regions that mattered most (vqa), or the prediction under the image(s).
Region-feature models look the image up in the run's feature files, or take `--features
<stem>.npy` (MMF layout, `<stem>_info.npy` beside it). Errors are one line, exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Sequence

from vlfw.cli.common import guarded_main
from vlfw.errors import DataError

TASK_ALIASES = {"vqa": "vqa", "vqa2": "vqa", "nlvr2": "nlvr2", "entailment": "entailment", "snli_ve": "entailment",
                "ground": "ground", "rec": "ground", "refcoco": "ground", "grounding": "ground",
                "caption": "caption", "captioning": "caption", "retrieval": "retrieval"}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vlfw_predict", description="Predict with a trained vlfw run.")
    p.add_argument("run", help="a run directory (with config.yaml) or a checkpoint in one")
    p.add_argument("--task", required=True, help=f"one of {', '.join(sorted(set(TASK_ALIASES.values())))}")
    p.add_argument("--image", action="append", default=[], help="image path (twice for nlvr2: left, right)")
    p.add_argument("--features", action="append", default=[], help="region features <stem>.npy instead of the "
                   "run's feature files (once per image)")
    p.add_argument("--images", help="retrieval: a folder of images to index")
    p.add_argument("--text", "--question", "--statement", "--hypothesis", "--expression", dest="text",
                   help="the question / statement / hypothesis / expression / retrieval query")
    p.add_argument("--boxes", help="ground on images: candidate boxes as JSON [[x, y, w, h], ...]")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--num-beams", type=int, default=None)
    p.add_argument("--max-length", type=int, default=None)
    p.add_argument("--dataset", help="which of the run's datasets to use (when several serve the task)")
    p.add_argument("--checkpoint", help="weights to use instead of the run's best (a .pt or .safetensors)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--visualize", metavar="PNG", help="write a picture of the prediction")
    return p


def _visuals(args: argparse.Namespace, count: int) -> list[Any]:
    visuals = args.features or args.image
    if args.features and args.image and len(args.features) != len(args.image):
        raise DataError(f"{len(args.image)} --image but {len(args.features)} --features: give one of each per image")
    if len(visuals) != count:
        raise DataError(f"--task {args.task} needs {count} image{'s' if count > 1 else ''} "
                        f"(--image{' twice' if count == 2 else ''}), got {len(visuals)}")
    for path in args.image:
        if not os.path.isfile(path):
            raise DataError(f"image not found: {path}")
    return visuals


def _need_text(args: argparse.Namespace, what: str) -> str:
    if not args.text:
        raise DataError(f"--task {args.task} needs {what} (--text)")
    return args.text


def _folder_images(folder: str) -> list[str]:
    if not os.path.isdir(folder):
        raise DataError(f"--images {folder} is not a folder")
    paths = sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.lower().endswith(IMAGE_SUFFIXES))
    if not paths:
        raise DataError(f"--images {folder}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    return paths


def predict(args: argparse.Namespace) -> tuple[dict, Any]:
    """(the JSON result, a picture or None)."""
    import vlfw
    from vlfw.inference import visualize

    task = TASK_ALIASES.get(args.task.lower())
    if task is None:
        from vlfw.errors import did_you_mean

        raise DataError(f"unknown --task {args.task!r}.{did_you_mean(args.task, TASK_ALIASES)} "
                        f"Tasks: {', '.join(sorted(set(TASK_ALIASES.values())))}")
    if args.visualize and not args.image:
        raise DataError("--visualize draws on the image: give --image (with --features too, if you use them)")
    predictor = vlfw.load(args.run, device=args.device, checkpoint=args.checkpoint)
    dataset = predictor.dataset_for(task, args.dataset)  # a task the run cannot do fails before any input is read
    out: dict[str, Any] = {"run": str(args.run), "model": predictor.model_name, "task": task, "dataset": dataset}
    picture = None
    if task == "vqa":
        question = _need_text(args, "a question")
        (visual,) = _visuals(args, 1)
        result = predictor.vqa(visual, question, top_k=args.top_k, dataset=dataset)
        out.update(question=question, answers=result)
        if args.visualize:
            picture = visualize.vqa_picture(predictor, visual, question, result, dataset)
    elif task == "nlvr2":
        statement = _need_text(args, "a statement")
        left, right = _visuals(args, 2)
        result = predictor.nlvr2(left, right, statement, dataset=dataset)
        out.update(statement=statement, **result)
        if args.visualize:
            picture = visualize.text_picture(args.image, [f"\"{statement}\"",
                                                          f"{result['prediction']} (P(True) {result['score']:.2f})"])
    elif task == "entailment":
        hypothesis = _need_text(args, "a hypothesis")
        (visual,) = _visuals(args, 1)
        result = predictor.entailment(visual, hypothesis, dataset=dataset)
        out.update(hypothesis=hypothesis, **result)
        if args.visualize:
            scores = ", ".join(f"{k} {v:.2f}" for k, v in result["scores"].items())
            picture = visualize.text_picture(args.image, [f"\"{hypothesis}\"", f"{result['label']} ({scores})"])
    elif task == "ground":
        expression = _need_text(args, "an expression")
        (visual,) = _visuals(args, 1)
        boxes = None
        if args.boxes:
            try:
                boxes = json.loads(args.boxes)
            except json.JSONDecodeError as error:
                raise DataError(f"--boxes is not JSON ({error.msg}); expected [[x, y, w, h], ...]") from None
            if not (isinstance(boxes, list) and all(isinstance(b, list) and len(b) == 4 for b in boxes)):
                raise DataError("--boxes must be a JSON list of [x, y, w, h] boxes")
        result = predictor.ground(visual, expression, boxes=boxes, top_k=args.top_k, dataset=dataset)
        out.update(expression=expression, **result)
        if args.visualize:
            picture = visualize.ground_picture(args.image[0], expression, result)
    elif task == "caption":
        (visual,) = _visuals(args, 1)
        caption = predictor.caption(visual, num_beams=args.num_beams, max_length=args.max_length, dataset=dataset)
        out.update(caption=caption)
        if args.visualize:
            picture = visualize.text_picture(args.image, [caption])
    else:
        query = _need_text(args, "a query text")
        if not args.images:
            raise DataError("--task retrieval needs --images FOLDER to search")
        index = predictor.retrieval(dataset).add_images(_folder_images(args.images))
        out.update(query=query, results=index.search(query, k=args.top_k))
    return out, picture


def print_table(out: dict) -> None:
    print(f"{out['model']} / {out['dataset']} ({out['task']})")
    if out["task"] == "vqa":
        print(f"  Q: {out['question']}")
        for row in out["answers"]:
            print(f"  {row['answer']:<20} {row['score']:.4f}")
    elif out["task"] == "nlvr2":
        print(f"  \"{out['statement']}\": {out['prediction']}  (P(True) {out['score']:.4f})")
    elif out["task"] == "entailment":
        print(f"  \"{out['hypothesis']}\": {out['label']}")
        for label, score in out["scores"].items():
            print(f"  {label:<14} {score:.4f}")
    elif out["task"] == "ground":
        print(f"  \"{out['expression']}\"")
        for row in out["boxes"]:
            box = ", ".join(f"{v:.1f}" for v in row["box"])
            score = "" if row.get("score") is None else f"{row['score']:.4f}"
            print(f"  [{box}]  {score}")
    elif out["task"] == "caption":
        print(f"  {out['caption']}")
    else:
        print(f"  query: {out['query']}")
        for row in out["results"]:
            print(f"  {row['score']:.4f}  {row['id']}")
    if out.get("picture"):
        print(f"  picture: {out['picture']}")


def _body(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    from vlfw.cli.common import setup_logging

    setup_logging(30)  # warnings only: the output is the prediction
    out, picture = predict(args)
    if picture is not None:
        from vlfw.inference.visualize import save

        out["picture"] = save(picture, args.visualize)
    if args.json:
        print(json.dumps(out, sort_keys=True))
    else:
        print_table(out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return guarded_main("vlfw_predict", _body, argv)


if __name__ == "__main__":
    sys.exit(main())
