"""VCR: visual commonsense reasoning, Q->A and QA->R multiple choice over 4 choices each.

Object references (a token that is a list of object indices, e.g. [0, 2]) are rendered as
the objects' class names joined by "and" ("person and dog"); every token of a name carries
that object's index in `*_object_ids` (-1 elsewhere, special tokens and padding included), so a
model can add the object's visual feature to those tokens. Class names (not "person1") keep the
text inside the tokenizer's vocabulary; the index in object_ids is what tells two persons apart.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from vlfw.data.batch import Batch, Sample, collate
from vlfw.datasets.common import NativeBuilder, NativeMapper, dataset_defaults
from vlfw.datasets.predictions import write_json
from vlfw.datasets.records import BadRecordCounter, BadRecordError, iter_json_lines, join, read_json, require_files
from vlfw.registry import DATASETS

PREFIXES = ("answer", "rationale")


def render_tokens(tokens: Sequence[Any], objects: Sequence[str]) -> tuple[list[str], list[int]]:
    """Words and, per word, the object index it names (-1 for ordinary words)."""
    words: list[str] = []
    object_ids: list[int] = []
    for token in tokens:
        if isinstance(token, list):
            for k, index in enumerate(token):
                if k:
                    words.append("and")
                    object_ids.append(-1)
                index = int(index)
                if not 0 <= index < len(objects):
                    raise ValueError(f"object index {index} out of range ({len(objects)} objects)")
                words.append(str(objects[index]))
                object_ids.append(index)
        else:
            words.append(str(token))
            object_ids.append(-1)
    return words, object_ids


class VCRMapper(NativeMapper):
    """A question record -> the 4 (question, answer) and 4 (context, rationale) encodings with
    object ids, the image (or regions) and the metadata's object boxes."""

    def encode_pair(self, first: tuple[list[str], list[int]], second: tuple[list[str], list[int]]) -> dict:
        """Text a and text b in the tokenizer's pair layout ([CLS] a [SEP] b [SEP], <s> a </s></s> b </s>)
        with object ids per token (-1 at special tokens); truncates the longer side first."""
        tokenizer = self.text
        pieces_a = tokenizer.tokenize_words(first[0])
        pieces_b = tokenizer.tokenize_words(second[0])
        ids_a = [p for word in pieces_a for p in word]
        obj_a = [o for word, o in zip(pieces_a, first[1]) for _ in word]
        ids_b = [p for word in pieces_b for p in word]
        obj_b = [o for word, o in zip(pieces_b, second[1]) for _ in word]
        budget = tokenizer.max_length - tokenizer.num_special_tokens(pair=True)
        while len(ids_a) + len(ids_b) > budget:
            if len(ids_b) > len(ids_a):
                ids_b.pop(), obj_b.pop()
            else:
                ids_a.pop(), obj_a.pop()
        encoded = tokenizer.build_inputs(ids_a, ids_b)
        # the tokens' object ids in order; the tokenizer's special tokens (wherever it puts them) get -1
        objects = iter(obj_a + obj_b)
        object_ids = [-1 if special else next(objects) for special in encoded["special_tokens_mask"]]
        encoded["object_ids"] = torch.tensor(object_ids, dtype=torch.long)
        return encoded

    def stack(self, prefix: str, encoded: list[dict]) -> dict[str, torch.Tensor]:
        """The four choices as (4, L) tensors; input_ids padded with the tokenizer's pad id."""
        length = max(len(e["input_ids"]) for e in encoded)
        out = {f"{prefix}_input_ids": torch.full((len(encoded), length), self.text.pad_id, dtype=torch.long),
               f"{prefix}_token_type_ids": torch.zeros(len(encoded), length, dtype=torch.long),
               f"{prefix}_attention_mask": torch.zeros(len(encoded), length, dtype=torch.bool),
               f"{prefix}_object_ids": torch.full((len(encoded), length), -1, dtype=torch.long)}
        for k, e in enumerate(encoded):
            n = len(e["input_ids"])
            out[f"{prefix}_input_ids"][k, :n] = e["input_ids"]
            out[f"{prefix}_token_type_ids"][k, :n] = e["token_type_ids"]
            out[f"{prefix}_attention_mask"][k, :n] = True
            out[f"{prefix}_object_ids"][k, :n] = e["object_ids"]
        return out

    def __call__(self, record: dict, index: int, generator: torch.Generator) -> Sample:
        row = record["row"]
        objects = [str(o) for o in row["objects"]]
        sample = Sample(index=index, id=str(row.get("annot_id", index)), split=record["native"], objects=objects)
        question = render_tokens(row["question"], objects)
        answers = [render_tokens(a, objects) for a in row["answer_choices"]]
        rationales = [render_tokens(r, objects) for r in row["rationale_choices"]]
        label = row.get("answer_label")
        context = question
        if label is not None:
            right = answers[int(label)]
            context = (question[0] + right[0], question[1] + right[1])
        sample.update(self.stack("answer", [self.encode_pair(question, a) for a in answers]))
        sample.update(self.stack("rationale", [self.encode_pair(context, r) for r in rationales]))

        folder = join(self.paths.image_dir, "vcr1images")
        metadata_path = join(folder, row["metadata_fn"])
        try:
            metadata = read_json(metadata_path)
            boxes = torch.tensor([b[:4] for b in metadata["boxes"]], dtype=torch.float32).reshape(-1, 4)
        except Exception as error:  # noqa: BLE001 - a missing or malformed metadata file is a bad record
            raise BadRecordError(metadata_path, record["where"], f"bad metadata ({error})", kind="image") from None
        if len(boxes) < len(objects):
            raise BadRecordError(metadata_path, record["where"], f"{len(boxes)} boxes for {len(objects)} objects", kind="image")
        boxes = boxes[: len(objects)]
        if self.visual == "images":
            fields, moved = self.load_image(join(folder, row["img_fn"]), record["where"], generator, boxes)
            sample.update(fields)
            sample.object_boxes = moved
        else:
            stem = row["img_fn"].rsplit("/", 1)[-1].rsplit(".", 1)[0]
            sample.update(self.load_regions(stem, stem, record["where"]))
            sample.object_boxes = boxes
        if label is not None:
            sample.answer_label = torch.tensor(int(label), dtype=torch.long)
        if row.get("rationale_label") is not None:
            sample.rationale_label = torch.tensor(int(row["rationale_label"]), dtype=torch.long)
        return sample


@DATASETS.register("vcr")
class VCRBuilder(NativeBuilder):
    """train/val/test.jsonl. Per sample: `answer_input_ids` (4, L), `rationale_input_ids` (4, L),
    with `*_token_type_ids`, `*_attention_mask` and `*_object_ids`; `object_boxes` (O, 4)
    from the metadata; labels `answer_label`, `rationale_label` (not in test). Rationale choices
    are paired with the question and the right answer; in test (no label) with the question only."""

    TASK = "vcr"
    MAPPER = VCRMapper
    DEFAULT_CONFIG = dataset_defaults(
        splits={"train": ["train"], "val": ["val"], "test": ["test"]},
        processors={"text": {"params": {"max_length": 64}}},
        losses=[{"type": "vcr_cross_entropy", "params": {}}],
        metrics=[{"type": "vcr_accuracy", "params": {}}],
    )

    def task_fields(self) -> dict[str, Any]:
        return {"num_choices": 4}

    def read_records(self, split: str, bad: BadRecordCounter) -> list[dict]:
        natives = self.native_splits(split)
        expected = {f"{n} annotations": join(self.paths.data_dir, f"{n}.jsonl") for n in natives}
        expected["image folder"] = join(self.paths.image_dir, "vcr1images")
        require_files(self.name, expected)
        records = []
        for native in natives:
            path = join(self.paths.data_dir, f"{native}.jsonl")
            for number, row in iter_json_lines(path, bad):
                where = f"line {number} ({row.get('annot_id', '?')})"
                problem = self._check(row)
                if problem:
                    bad.handle(BadRecordError(path, where, problem))
                    continue
                records.append({"row": row, "native": native, "where": f"{path} {where}"})
        return records

    @staticmethod
    def _check(row: dict) -> str | None:
        for key in ("question", "answer_choices", "rationale_choices", "objects", "img_fn", "metadata_fn"):
            if key not in row:
                return f"missing field {key!r}"
        if not row["question"]:
            return "empty question"
        if len(row["answer_choices"]) != 4 or len(row["rationale_choices"]) != 4:
            return "expected 4 answer and 4 rationale choices"
        for key in ("answer_label", "rationale_label"):
            if key in row and row[key] is not None and int(row[key]) not in range(4):
                return f"{key} {row[key]!r} is not 0..3"
        objects = row["objects"]
        for tokens in [row["question"], *row["answer_choices"], *row["rationale_choices"]]:
            for token in tokens:
                if isinstance(token, list) and any(not 0 <= int(i) < len(objects) for i in token):
                    return f"object index in {token} out of range ({len(objects)} objects)"
        return None

    def format_predictions(self, batch: Batch, outputs: dict[str, torch.Tensor]) -> list[dict]:
        """[{"annot_id", "answer": 0..3, "rationale": 0..3}]: the argmax choices."""
        answers = outputs["answer_logits"].detach().argmax(dim=-1).tolist()
        rationales = outputs["rationale_logits"].detach().argmax(dim=-1).tolist()
        return [{"annot_id": str(i), "answer": int(a), "rationale": int(r)}
                for i, a, r in zip(batch["id"], answers, rationales)]

    def write_predictions(self, predictions: list[dict], path: str) -> None:
        write_json(predictions, path)

    def collate(self, samples: Sequence[Sample]) -> Batch:
        batch = collate(samples, self.name, self.pad_values())
        for prefix in PREFIXES:  # padding is not object 0
            ids, mask = batch.get(f"{prefix}_object_ids"), batch.get(f"{prefix}_attention_mask")
            if ids is not None and mask is not None:
                ids[~mask] = -1
        return batch
