"""Flickr30k Entities: phrase grounding, one sample per grounded phrase."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from typing import Any

import torch

from vlfw.data.batch import Batch, Sample
from vlfw.datasets.common import NativeBuilder, NativeMapper, dataset_defaults
from vlfw.datasets.predictions import boxes_in_original_pixels, write_json
from vlfw.datasets.records import BadRecordCounter, BadRecordError, join, path_manager, require_files
from vlfw.errors import DataError
from vlfw.metrics.rec import masked_region_logits
from vlfw.processors.boxes import box_iou
from vlfw.registry import DATASETS

PHRASE = re.compile(r"\[/EN#(\d+)((?:/[^\s\]]+)+)\s+([^\]]*)\]")


def parse_sentence(line: str) -> tuple[str, list[dict]]:
    """Plain sentence and its phrases [{chain, types, text, first_word}]."""
    phrases = []
    words: list[str] = []
    position = 0
    for match in PHRASE.finditer(line):
        words += line[position:match.start()].split()
        text = " ".join(match.group(3).split())
        phrases.append({"chain": match.group(1), "types": [t for t in match.group(2).split("/") if t],
                        "text": text, "first_word": len(words)})
        words += text.split()
        position = match.end()
    words += line[position:].split()
    return " ".join(words), phrases


def parse_annotation(text: str) -> tuple[float, float, dict[str, list[list[float]]]]:
    """(width, height, chain -> xyxy boxes). 1-based integer corners become 0-based pixel edges:
    (xmin - 1, ymin - 1, xmax, ymax)."""
    root = ElementTree.fromstring(text)
    size = root.find("size")
    width = float(size.findtext("width"))
    height = float(size.findtext("height"))
    chains: dict[str, list[list[float]]] = {}
    for obj in root.findall("object"):
        box = obj.find("bndbox")
        if box is None:
            continue
        xyxy = [float(box.findtext("xmin")) - 1, float(box.findtext("ymin")) - 1,
                float(box.findtext("xmax")), float(box.findtext("ymax"))]
        for name in obj.findall("name"):
            chains.setdefault(name.text.strip(), []).append(xyxy)
    return width, height, chains


class Flickr30kEntitiesMapper(NativeMapper):
    """A phrase record -> [CLS] phrase [SEP] sentence [SEP] tokens, candidates and targets."""

    def __call__(self, record: dict, index: int, generator: torch.Generator) -> Sample:
        sample = Sample(index=index, id=record["id"], split=record["native"], image_id=record["image_id"],
                        phrase=record["phrase"], sentence=record["sentence"], phrase_type=record["types"][0])
        self.encode(sample, record["phrase"], record["sentence"])
        gt = torch.tensor(record["gt_boxes"], dtype=torch.float32).reshape(-1, 4)
        where = f"phrase {record['id']}"
        if self.visual == "regions":
            sample.update(self.load_regions(record["image_id"], record["image_id"], where))
            candidates = sample.region_boxes
            sample.gt_boxes = gt
        else:
            candidates = torch.tensor(record["all_boxes"], dtype=torch.float32).reshape(-1, 4)
            path = join(self.paths.image_dir, "flickr30k-images", f"{record['image_id']}.jpg")
            fields, moved = self.load_image(path, where, generator, torch.cat([candidates, gt]))
            sample.update(fields)
            sample.region_boxes, sample.gt_boxes = moved[: len(candidates)], moved[len(candidates):]
        if len(candidates) == 0:
            raise DataError(f"{where}: no candidate boxes")
        if len(gt):  # a predictor's record has no ground-truth boxes
            sample.region_targets = (box_iou(candidates, gt).max(dim=1).values >= 0.5).float()
        return sample


@DATASETS.register("flickr30k_entities")
class Flickr30kEntitiesBuilder(NativeBuilder):
    """Sentences/<id>.txt, Annotations/<id>.xml, <split>.txt. `input_ids` = [CLS] phrase [SEP]
    sentence [SEP]; candidates: detector regions (visual=regions) or all ground-truth boxes of the
    image (visual=images, moved with the image transform together with `gt_boxes`);
    `region_targets` (N,) = 1 where a candidate has IoU >= 0.5 with any box of the phrase's chain."""

    TASK = "grounding"
    MAPPER = Flickr30kEntitiesMapper
    DEFAULT_CONFIG = dataset_defaults(
        splits={"train": ["train"], "val": ["val"], "test": ["test"]},
        losses=[{"type": "rec_bce", "params": {}}],
        metrics=[{"type": "grounding_recall", "params": {}}],
    )

    def predict_record(self, inputs: dict[str, Any]) -> tuple[dict, list[str] | None]:
        """`expression` (the phrase), optional `sentence` (default: the phrase) and, with
        visual=images, the candidate `boxes` ([x1, y1, x2, y2] pixels)."""
        phrase = str(inputs["expression"]).strip()
        return {"id": "predict", "native": self.native_splits("val")[0], "image_id": "predict", "phrase": phrase,
                "sentence": str(inputs.get("sentence") or phrase), "types": ["other"], "gt_boxes": [],
                "all_boxes": [list(map(float, b)) for b in (inputs.get("boxes") or [])]}, None

    def read_records(self, split: str, bad: BadRecordCounter) -> list[dict]:
        natives = self.native_splits(split)
        data_dir = self.paths.data_dir
        expected = {f"{n} split list": join(data_dir, f"{n}.txt") for n in natives}
        expected.update({"Sentences folder": join(data_dir, "Sentences"), "Annotations folder": join(data_dir, "Annotations")})
        if self.visual == "images":
            expected["image folder"] = join(self.paths.image_dir, "flickr30k-images")
        require_files(self.name, expected)
        records = []
        for native in natives:
            with path_manager.open(join(data_dir, f"{native}.txt"), "r") as handle:
                ids = [line.strip() for line in handle if line.strip()]
            for image_id in ids:
                sentence_path = join(data_dir, "Sentences", f"{image_id}.txt")
                xml_path = join(data_dir, "Annotations", f"{image_id}.xml")
                try:
                    with path_manager.open(xml_path, "r") as handle:
                        width, height, chains = parse_annotation(handle.read())
                    with path_manager.open(sentence_path, "r", encoding="utf-8") as handle:
                        lines = [line.strip() for line in handle if line.strip()]
                except FileNotFoundError as error:
                    bad.handle(BadRecordError(getattr(error, "filename", None) or xml_path, f"image {image_id}",
                                              "file not found"))
                    continue
                except (ElementTree.ParseError, AttributeError, TypeError, ValueError) as error:
                    bad.handle(BadRecordError(xml_path, f"image {image_id}", f"malformed annotation ({error})"))
                    continue
                all_boxes = [b for boxes in chains.values() for b in boxes]
                for number, line in enumerate(lines, 1):
                    sentence, phrases = parse_sentence(line)
                    for k, phrase in enumerate(phrases):
                        if phrase["chain"] == "0" or "notvisual" in phrase["types"] or phrase["chain"] not in chains:
                            continue  # not grounded: skipped by the protocol, not an error
                        if not phrase["text"]:
                            bad.handle(BadRecordError(sentence_path, f"line {number} phrase {k}", "empty phrase"))
                            continue
                        records.append({"image_id": image_id, "native": native, "sentence": sentence,
                                        "phrase": phrase["text"], "chain": phrase["chain"], "types": phrase["types"],
                                        "gt_boxes": chains[phrase["chain"]], "all_boxes": all_boxes,
                                        "image_size": (width, height), "id": f"{image_id}_{number}_{k}"})
        return records

    def format_predictions(self, batch: Batch, outputs: dict[str, torch.Tensor]) -> list[dict]:
        """[{"id", "image_id", "phrase", "boxes" [[x1, y1, x2, y2], ...] in original image pixels, best first,
        "scores"}]: every candidate of the phrase ranked as `grounding_recall` ranks them."""
        logits = masked_region_logits(outputs["region_logits"], batch.get("region_mask")).cpu()
        regions = torch.as_tensor(batch["region_boxes"]).float().cpu()
        rows = []
        for i, (phrase_id, image_id, phrase) in enumerate(zip(batch["id"], batch["image_id"], batch["phrase"])):
            real = int(torch.isfinite(logits[i]).sum())
            order = logits[i].argsort(descending=True, stable=True)[:real]
            boxes = boxes_in_original_pixels(regions[i][order][None], batch.select([i]), self.visual)[0]
            rows.append({"id": str(phrase_id), "image_id": str(image_id), "phrase": str(phrase), "boxes": boxes,
                         "scores": logits[i][order].tolist()})
        return rows

    def write_predictions(self, predictions: list[dict], path: str) -> None:
        write_json(predictions, path)
