"""RefCOCO, RefCOCO+ and RefCOCOg: referring expression comprehension (pick the referred box)."""

from __future__ import annotations

from typing import Any

import torch

from vlfw import restricted_pickle
from vlfw.data.batch import Batch, Sample
from vlfw.datasets.common import NativeBuilder, NativeMapper, dataset_defaults
from vlfw.datasets.predictions import boxes_in_original_pixels, write_json
from vlfw.datasets.records import BadRecordCounter, BadRecordError, join, path_manager, read_json, read_json_list, require_files
from vlfw.errors import DataError
from vlfw.metrics.rec import masked_region_logits
from vlfw.processors.boxes import box_iou, xywh_to_xyxy
from vlfw.registry import DATASETS


def load_refs(path: str) -> list[dict]:
    """refs(<splitBy>).p: a Python-2 pickle; retried with encoding="latin1" when needed.

    Read through vlfw.restricted_pickle (plain containers, numbers, strings, numpy arrays; any other
    global is refused, never imported), so a refs file from an untrusted source runs no code."""
    try:
        with path_manager.open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    try:
        refs = restricted_pickle.loads(data, path)
    except restricted_pickle.PickleTextError:  # Python-2 byte strings that are not ASCII
        try:
            refs = restricted_pickle.loads(data, path, encoding="latin1")
        except restricted_pickle.UnsafePickleError:
            raise
        except restricted_pickle.CorruptPickleError as error:
            raise DataError(f"{path}: cannot unpickle the refs, even as latin1 ({error.detail})") from None
    except restricted_pickle.UnsafePickleError:
        raise  # one line naming the file and the forbidden global
    except restricted_pickle.CorruptPickleError as error:  # truncated or not a pickle
        raise DataError(f"{path}: cannot unpickle the refs ({error.detail}); download it again") from None
    if not isinstance(refs, list):
        raise DataError(f"{path}: expected a pickled list of refs, got {type(refs).__name__}")
    return refs


class RefCocoMapper(NativeMapper):
    """An expression record -> tokens, candidate boxes (detector regions, or the image's COCO
    instance boxes from `image_boxes`), `region_targets` and `gt_box`."""

    NEEDS_CANDIDATES = True  # the model chooses among candidate boxes (a box-predicting head does not)

    def __init__(self, *, image_boxes: dict[int, list] | None = None, **parts: Any) -> None:
        super().__init__(**parts)
        self.image_boxes = image_boxes or {}  # image_id -> COCO xywh boxes of its instances (visual=images)

    def __call__(self, record: dict, index: int, generator: torch.Generator) -> Sample:
        sample = Sample(index=index, id=record["sent_id"], split=record["split"], image_id=record["image_id"],
                        ref_id=record["ref_id"], ann_id=record["ann_id"], expression=record["text"])
        self.encode(sample, record["text"])
        known = record.get("bbox") is not None  # None: a predictor's record (no referred box)
        gt = xywh_to_xyxy(torch.tensor([record["bbox"] if known else [0.0, 0.0, 1.0, 1.0]], dtype=torch.float32))
        where = f"sent_id {record['sent_id']}"
        if self.visual == "regions":
            stem = record["file_name"].rsplit(".", 1)[0]
            sample.update(self.load_regions(str(record["image_id"]), stem, where))
            candidates = sample.region_boxes
            if known:
                sample.gt_box = gt[0]
        else:
            boxes = record.get("candidate_boxes") or self.image_boxes.get(record["image_id"], [])
            candidates = xywh_to_xyxy(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
            path = join(self.paths.image_dir, "train2014", record["file_name"])
            fields, moved = self.load_image(path, where, generator, torch.cat([candidates, gt]))
            sample.update(fields)
            sample.region_boxes = moved[:-1]
            if known:
                sample.gt_box = moved[-1]
        if not known and self.NEEDS_CANDIDATES and len(candidates) == 0:
            raise DataError("no candidate boxes to choose the referred object from: give boxes (x, y, w, h) "
                            "or region features")
        if known:
            sample.region_targets = (box_iou(candidates, gt)[:, 0] > 0.5).float()
        return sample


class RefCocoBuilder(NativeBuilder):
    """One sample per expression. Candidates: the detector regions (visual=regions) or the
    image's COCO instance boxes (visual=images, `region_boxes` and `gt_box` then moved with the
    image transform). `region_targets` (N,) = IoU(candidate, referred box) > 0.5."""

    TASK = "rec"
    FOLDER = "refcoco"
    MAPPER = RefCocoMapper
    DEFAULT_CONFIG = dataset_defaults(
        split_by="unc",
        splits={"train": ["train"], "val": ["val"], "test": ["testA", "testB"], "testA": ["testA"], "testB": ["testB"]},
        losses=[{"type": "rec_bce", "params": {}}],
        metrics=[{"type": "rec_accuracy", "params": {}}],
    )

    def __init__(self, config: Any, name: str) -> None:
        super().__init__(config, name)
        self._instances: dict | None = None

    def files(self) -> dict[str, str]:
        root = join(self.paths.data_dir, self.FOLDER)
        return {"instances": join(root, "instances.json"), "refs": join(root, f"refs({self.config.split_by}).p")}

    def instances(self) -> dict:
        if self._instances is None:
            path = self.files()["instances"]
            data = read_json(path)
            images = {int(i["id"]): i for i in read_json_list(path, "images", data) if isinstance(i, dict) and "id" in i}
            annotations = {int(a["id"]): a for a in read_json_list(path, "annotations", data)
                           if isinstance(a, dict) and "id" in a}
            by_image: dict[int, list[dict]] = {}
            for a in annotations.values():
                by_image.setdefault(int(a["image_id"]), []).append(a)
            self._instances = {"images": images, "annotations": annotations, "by_image": by_image}
        return self._instances

    def read_records(self, split: str, bad: BadRecordCounter) -> list[dict]:
        files = self.files()
        require_files(self.name, {"COCO instances": files["instances"], f"refs (split_by {self.config.split_by})": files["refs"]})
        natives = set(self.native_splits(split))
        instances = self.instances()
        records = []
        for position, ref in enumerate(load_refs(files["refs"])):
            if not isinstance(ref, dict) or ref.get("split") not in natives:
                continue
            where = f"ref_id {ref.get('ref_id', position)}"
            annotation = instances["annotations"].get(int(ref.get("ann_id", -1)))
            if annotation is None:
                bad.handle(BadRecordError(files["refs"], where, f"ann_id {ref.get('ann_id')} is not in {files['instances']}"))
                continue
            image = instances["images"].get(int(annotation["image_id"]))
            if image is None:
                bad.handle(BadRecordError(files["instances"], where, f"image {annotation['image_id']} is not listed"))
                continue
            bbox = annotation.get("bbox")
            if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or bbox[2] <= 0 or bbox[3] <= 0:
                bad.handle(BadRecordError(files["instances"], f"annotation {annotation['id']}", f"bad bbox {bbox!r}"))
                continue
            for sentence in ref.get("sentences", []):
                text = sentence.get("sent") or sentence.get("raw") if isinstance(sentence, dict) else None
                if not isinstance(text, str) or not text.strip():
                    bad.handle(BadRecordError(files["refs"], f"{where} sentence "
                                                             f"{sentence.get('sent_id') if isinstance(sentence, dict) else '?'}",
                                              "empty expression"))
                    continue
                records.append({"sent_id": sentence.get("sent_id"), "ref_id": ref.get("ref_id"), "ann_id": int(annotation["id"]),
                                "image_id": int(image["id"]), "file_name": image["file_name"], "text": text.strip(),
                                "split": ref["split"], "bbox": list(bbox)})
        return records

    def predict_record(self, inputs: dict[str, Any]) -> tuple[dict, list[str] | None]:
        """`expression`; with visual=images the candidate boxes `boxes` ([x, y, w, h] pixels)."""
        boxes = [list(map(float, b)) for b in (inputs.get("boxes") or [])]
        return {"sent_id": 0, "ref_id": 0, "ann_id": 0, "image_id": 0, "file_name": "predict.jpg",
                "text": str(inputs["expression"]).strip(), "split": self.native_splits("val")[0], "bbox": None,
                "candidate_boxes": boxes}, None

    def mapper_arguments(self, split: str) -> dict[str, Any]:
        arguments = super().mapper_arguments(split)
        if self.visual == "images":  # the candidates: every COCO instance box of the image
            arguments["image_boxes"] = {image_id: [a["bbox"] for a in annotations]
                                        for image_id, annotations in self.instances()["by_image"].items()}
        return arguments

    def format_predictions(self, batch: Batch, outputs: dict[str, torch.Tensor]) -> list[dict]:
        """[{"sent_id", "ref_id", "image_id", "box" [x1, y1, x2, y2] in original image pixels, "score"}]:
        the top candidate of each expression (the one `rec_accuracy` scores)."""
        logits = masked_region_logits(outputs["region_logits"], batch.get("region_mask")).cpu()
        choice = logits.argmax(dim=-1)
        rows = torch.arange(len(choice))
        boxes = torch.as_tensor(batch["region_boxes"]).float().cpu()[rows, choice]
        boxes = boxes_in_original_pixels(boxes, batch, self.visual)
        scores = logits[rows, choice].tolist()
        return [{"sent_id": int(sent), "ref_id": int(ref), "image_id": int(image), "box": box, "score": score}
                for sent, ref, image, box, score in zip(batch["id"], batch["ref_id"], batch["image_id"], boxes, scores)]

    def write_predictions(self, predictions: list[dict], path: str) -> None:
        write_json(predictions, path)


@DATASETS.register("refcoco")
class RefCocoUncBuilder(RefCocoBuilder):
    FOLDER = "refcoco"


@DATASETS.register("refcoco_plus")
class RefCocoPlusBuilder(RefCocoBuilder):
    FOLDER = "refcoco+"


@DATASETS.register("refcocog")
class RefCocogBuilder(RefCocoBuilder):
    FOLDER = "refcocog"
    DEFAULT_CONFIG = dataset_defaults(
        split_by="umd",
        splits={"train": ["train"], "val": ["val"], "test": ["test"]},
        losses=[{"type": "rec_bce", "params": {}}],
        metrics=[{"type": "rec_accuracy", "params": {}}],
    )
