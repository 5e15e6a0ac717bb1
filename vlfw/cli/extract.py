"""vlfw_extract: region features or retrieval embeddings for a folder of images.

    vlfw_extract regions --images DIR --out FEATS --detector fasterrcnn_resnet50_fpn --weights frcnn.pth
                         [--format npy|butd_tsv] [--max-regions 36]
    vlfw_extract embeddings RUN_DIR --images DIR --out index.safetensors [--texts captions.txt]

`regions` writes the layouts the builders read (features.format): `npy` = one `<stem>.npy`
(N, D) + `<stem>_info.npy` (bbox, num_boxes, image_width, image_height, cls_prob, objects) per
image (MMF), `butd_tsv` = one `features.tsv` (image_id, image_w, image_h, num_boxes, base64
boxes, base64 features; image_id = the file stem). `embeddings` writes a retrieval index
(vlfw.inference.retrieval) of a dual-encoder run. Every file is written under a temporary name
and renamed when complete.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import sys
from typing import Sequence

import numpy as np

from vlfw.cli.common import guarded_main
from vlfw.errors import DataError


def _images(folder: str) -> list[str]:
    from vlfw.cli.predict import _folder_images

    return _folder_images(folder)


def _atomic_bytes(path: str, data: bytes) -> None:
    from vlfw.runner.checkpoint import atomic_write

    atomic_write(path, lambda handle: handle.write(data))


def _npy_bytes(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def write_regions(paths: list[str], detector, out: str, fmt: str, batch_size: int = 4) -> int:
    from vlfw.inference.inputs import open_image

    os.makedirs(out, exist_ok=True)
    lines: list[str] = []
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        for path, regions in zip(chunk, detector.regions_batch([open_image(p) for p in chunk])):
            stem = os.path.splitext(os.path.basename(path))[0]
            features = np.ascontiguousarray(regions.features, dtype=np.float32)
            boxes = np.ascontiguousarray(regions.boxes, dtype=np.float32)
            if fmt == "npy":
                info = {"bbox": boxes, "num_boxes": len(boxes), "image_width": regions.width,
                        "image_height": regions.height, "image_id": stem,
                        "cls_prob": regions.class_probs, "objects": regions.class_probs.argmax(axis=1)}
                _atomic_bytes(os.path.join(out, f"{stem}.npy"), _npy_bytes(features))
                # the info dict is an object array, as MMF writes it; vlfw reads it back with a
                # restricted unpickler (plain containers and arrays only)
                _atomic_bytes(os.path.join(out, f"{stem}_info.npy"), _npy_bytes(np.array(info, dtype=object), True))
            else:
                lines.append("\t".join([stem, f"{regions.width:g}", f"{regions.height:g}", str(len(boxes)),
                                        base64.b64encode(boxes.astype("<f4").tobytes()).decode("ascii"),
                                        base64.b64encode(features.astype("<f4").tobytes()).decode("ascii")]))
    if fmt == "butd_tsv":
        _atomic_bytes(os.path.join(out, "features.tsv"), ("\n".join(lines) + "\n").encode("utf-8"))
    return len(paths)


def _body(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="vlfw_extract", description="Region features or retrieval embeddings "
                                     "for a folder of images.")
    sub = parser.add_subparsers(dest="what", required=True)
    regions = sub.add_parser("regions", help="region features from a torchvision detector with local weights")
    regions.add_argument("--images", required=True)
    regions.add_argument("--out", required=True)
    regions.add_argument("--detector", default="fasterrcnn_resnet50_fpn")
    regions.add_argument("--weights", required=True, help="the detector's state dict (.pth/.pt or .safetensors)")
    regions.add_argument("--format", choices=("npy", "butd_tsv"), default="npy")
    regions.add_argument("--max-regions", type=int, default=36)
    regions.add_argument("--min-regions", type=int, default=10)
    regions.add_argument("--score-threshold", type=float, default=0.2)
    regions.add_argument("--device", default="cpu")
    embeddings = sub.add_parser("embeddings", help="a retrieval index of a dual-encoder run")
    embeddings.add_argument("run")
    embeddings.add_argument("--images", required=True)
    embeddings.add_argument("--out", required=True)
    embeddings.add_argument("--texts", help="a text file, one caption per line, to index too")
    embeddings.add_argument("--dataset")
    embeddings.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    paths = _images(args.images)
    if args.what == "regions":
        from vlfw.inference.detector import TorchvisionDetector

        detector = TorchvisionDetector.from_file(args.detector, args.weights, max_regions=args.max_regions,
                                                 min_regions=args.min_regions, score_threshold=args.score_threshold,
                                                 device=args.device)
        count = write_regions(paths, detector, args.out, args.format)
        print(f"wrote {args.format} region features of {count} images to {args.out}")
        return 0
    import vlfw

    predictor = vlfw.load(args.run, device=args.device)
    index = predictor.retrieval(args.dataset).add_images(paths)
    if args.texts:
        if not os.path.isfile(args.texts):
            raise DataError(f"--texts file not found: {args.texts}")
        with open(args.texts, encoding="utf-8") as handle:
            texts = [line.strip() for line in handle if line.strip()]
        index.add_texts(texts)
    index.save(args.out)
    print(f"wrote a retrieval index of {len(index.image_ids)} images and {len(index.text_ids)} texts to {args.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return guarded_main("vlfw_extract", _body, argv)


if __name__ == "__main__":
    sys.exit(main())
