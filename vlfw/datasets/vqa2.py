"""VQA v2: open-ended questions on COCO images, soft-score answer classification."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any

import torch

from vlfw.cache import cache_dir
from vlfw.data.batch import Batch, Sample
from vlfw.datasets.common import NativeBuilder, NativeMapper, dataset_defaults
from vlfw.datasets.records import BadRecordCounter, BadRecordError, join, path_manager, read_json_list, require_files
from vlfw.errors import DataError
from vlfw.registry import DATASETS

log = logging.getLogger(__name__)

# test-dev questions are asked about the test2015 images
IMAGE_SUBSET = {"test-dev2015": "test2015"}


def question_file(data_dir: str, subset: str) -> str:
    return join(data_dir, f"v2_OpenEnded_mscoco_{subset}_questions.json")


def annotation_file(data_dir: str, subset: str) -> str:
    return join(data_dir, f"v2_mscoco_{subset}_annotations.json")


def image_file(image_dir: str, subset: str, image_id: int) -> str:
    folder = IMAGE_SUBSET.get(subset, subset)
    return join(image_dir, folder, f"COCO_{folder}_{int(image_id):012d}.jpg")


class VQA2Mapper(NativeMapper):
    """A question record -> question tokens, the COCO image (or its regions), soft targets."""

    def __init__(self, *, answer: Any = None, **parts: Any) -> None:
        super().__init__(**parts)
        self.answer = answer  # the answer processor (None: no split record carries answers)

    def __call__(self, record: dict, index: int, generator: torch.Generator) -> Sample:
        sample = Sample(index=index, id=record["question_id"], split=record["subset"],
                        image_id=record["image_id"], question=record["question"])
        self.encode(sample, record["question"])
        where = f"question_id {record['question_id']}"
        if self.visual == "images":
            path = image_file(self.paths.image_dir, record["subset"], record["image_id"])
            fields, _ = self.load_image(path, where, generator)
            sample.update(fields)
        else:
            folder = IMAGE_SUBSET.get(record["subset"], record["subset"])
            stem = f"COCO_{folder}_{record['image_id']:012d}"
            sample.update(self.load_regions(str(record["image_id"]), stem, where))
        if "answers" in record:
            sample.targets = self.answer(record["answers"])
            sample.answers = list(record["answers"])
            sample.answer_type = record["answer_type"]
        return sample


@DATASETS.register("vqa2")
class VQA2Builder(NativeBuilder):
    """VQA v2. The answer vocabulary is built from the `train` split's annotations
    (answers in >= min_count questions; min_count null: 9 for real data, 1 for Shapes) or read
    from `processors.answer.params.vocabulary_path`; it is cached under $VLFW_CACHE/answers."""

    TASK = "vqa"
    MAPPER = VQA2Mapper
    DEFAULT_CONFIG = dataset_defaults(
        splits={"train": ["train2014"], "val": ["val2014"], "test": ["test-dev2015"]},
        processors={"answer": {"type": "vqa_answer", "params": {"min_count": None, "vocabulary_path": None}}},
        # questions of the training split without any in-vocabulary answer are dropped (counted)
        drop_unanswerable_train=True,
        losses=[{"type": "soft_bce", "params": {}}],
        metrics=[{"type": "vqa_accuracy", "params": {}}],
    )

    def __init__(self, config: Any, name: str) -> None:
        super().__init__(config, name)
        self._vocabulary = None
        self._answer_processor = None

    def native_splits(self, split: str) -> list[str]:
        names = super().native_splits(split)
        # the Shapes world has no separate test-dev questions: its test subset is test2015
        if str(self.config.source) == "shapes" and names == ["test-dev2015"]:
            return ["test2015"]
        return names

    # -- answer vocabulary --------------------------------------------------------------------
    @property
    def min_count(self) -> int:
        value = self.option("processors.answer.params.min_count")
        if value is None:
            return 1 if str(self.config.source) == "shapes" else 9
        return int(value)

    @property
    def vocabulary(self):
        if self._vocabulary is None:
            self._vocabulary = self._load_vocabulary()
        return self._vocabulary

    def _load_vocabulary(self):
        from vlfw.processors.answers import AnswerVocabulary

        fixed = self.option("processors.answer.params.vocabulary_path")
        if fixed:
            try:
                return AnswerVocabulary.load(fixed)
            except ValueError as error:
                raise DataError(str(error)) from None
        files = [annotation_file(self.paths.data_dir, s) for s in self.native_splits("train")]
        require_files(self.name, {f"train annotations ({os.path.basename(f)})": f for f in files},
                      "The answer vocabulary is built from them (or set processors.answer.params.vocabulary_path).")
        digest = hashlib.sha1()
        for f in files:
            stat = os.stat(f) if os.path.exists(f) else None
            digest.update(f"{os.path.abspath(f)}|{stat.st_size if stat else ''}|{stat.st_mtime_ns if stat else ''}".encode())
        digest.update(f"min_count={self.min_count}".encode())
        cached = join(cache_dir(), "answers", f"vqa2-{digest.hexdigest()[:16]}.json")
        if os.path.exists(cached):
            try:
                return AnswerVocabulary.load(cached)
            except ValueError:
                pass
        answers: list[str] = []
        for f in files:
            for annotation in read_json_list(f, "annotations"):
                if isinstance(annotation, dict) and isinstance(annotation.get("multiple_choice_answer"), str):
                    answers.append(annotation["multiple_choice_answer"])
        vocabulary = AnswerVocabulary.from_annotations(answers, min_count=self.min_count)
        if len(vocabulary) == 0:
            raise DataError(f"{self.name}: no answer occurs in >= {self.min_count} training questions of "
                            f"{', '.join(files)}; lower processors.answer.params.min_count")
        try:
            os.makedirs(os.path.dirname(cached), exist_ok=True)
            tmp = f"{cached}.{os.getpid()}.tmp"
            vocabulary.save(tmp)
            os.replace(tmp, cached)
        except OSError as error:  # the cache is an optimisation only
            log.debug("cannot cache the answer vocabulary at %s: %s", cached, error)
        return vocabulary

    @property
    def answer_processor(self):
        """`processors.answer` with the vocabulary injected."""
        if self._answer_processor is None:
            self._answer_processor = self.build_processor("answer", vocabulary=self.vocabulary)
        return self._answer_processor

    def task_fields(self) -> dict[str, Any]:
        return {"num_answers": len(self.vocabulary), "answers": tuple(self.vocabulary.answers)}

    # -- records ------------------------------------------------------------------------------
    def expected_files(self, split: str) -> dict[str, str]:
        expected = {}
        for subset in self.native_splits(split):
            expected[f"{subset} questions"] = question_file(self.paths.data_dir, subset)
            if split != "test":
                expected[f"{subset} annotations"] = annotation_file(self.paths.data_dir, subset)
            if self.visual == "images":
                folder = IMAGE_SUBSET.get(subset, subset)
                expected[f"{subset} image folder"] = join(self.paths.image_dir, folder)
        return expected

    def has_annotations(self, split: str) -> bool:
        """Whether the split's records carry answers (test: only when its annotations exist)."""
        return split != "test" or any(path_manager.exists(annotation_file(self.paths.data_dir, s))
                                      for s in self.native_splits(split))

    def read_records(self, split: str, bad: BadRecordCounter) -> list[dict]:
        expected = self.expected_files(split)
        require_files(self.name, expected)
        train = self.is_train(split)
        drop_unanswerable = train and bool(self.config.drop_unanswerable_train)
        vocabulary = self.vocabulary if drop_unanswerable else None
        records: list[dict] = []
        unanswerable = 0
        for subset in self.native_splits(split):
            qpath = question_file(self.paths.data_dir, subset)
            questions = read_json_list(qpath, "questions")
            annotations: dict[int, dict] | None = None
            apath = annotation_file(self.paths.data_dir, subset)
            if split != "test" or path_manager.exists(apath):
                items = read_json_list(apath, "annotations")
                annotations = {a.get("question_id"): a for a in items if isinstance(a, dict)}
            for position, question in enumerate(questions):
                qid = question.get("question_id") if isinstance(question, dict) else None
                where = f"question_id {qid}" if qid is not None else f"questions[{position}]"
                text = question.get("question") if isinstance(question, dict) else None
                if qid is None or question.get("image_id") is None:
                    bad.handle(BadRecordError(qpath, where, "missing question_id or image_id"))
                    continue
                if not isinstance(text, str) or not text.strip():
                    bad.handle(BadRecordError(qpath, where, "empty question"))
                    continue
                record = {"question_id": int(qid), "image_id": int(question["image_id"]), "question": text.strip(),
                          "subset": subset}
                if annotations is not None:
                    annotation = annotations.get(qid)
                    if annotation is None:
                        bad.handle(BadRecordError(apath, where, "no annotation for this question"))
                        continue
                    answers = [a.get("answer") for a in annotation.get("answers", []) if isinstance(a, dict)]
                    if not answers or not all(isinstance(a, str) for a in answers):
                        bad.handle(BadRecordError(apath, where, "annotation without answers"))
                        continue
                    if drop_unanswerable and not vocabulary.has_any(answers):
                        unanswerable += 1
                        continue
                    record["answers"] = answers
                    record["answer_type"] = str(annotation.get("answer_type", ""))
                    if annotation.get("question_type"):
                        record["question_type"] = str(annotation["question_type"])
                records.append(record)
        if unanswerable:
            bad.drop("question without an in-vocabulary answer (training only)", unanswerable)
            log.info("%s %s: dropped %d training questions none of whose answers is in the %d-answer vocabulary",
                     self.name, split, unanswerable, len(self.vocabulary))
        return records

    def mapper_arguments(self, split: str) -> dict[str, Any]:
        answer = self.answer_processor if self.has_annotations(split) else None
        return {**super().mapper_arguments(split), "answer": answer}

    # -- predictions --------------------------------------------------------------------------
    def predict_record(self, inputs: dict[str, Any]) -> tuple[dict, list[str] | None]:
        return {"question_id": 0, "image_id": 0, "question": str(inputs["question"]).strip(),
                "subset": self.native_splits("val")[0]}, None

    def format_predictions(self, batch: Batch, outputs: dict[str, torch.Tensor]) -> list[dict]:
        """[{"question_id", "answer"}] from the argmax of `logits`."""
        best = outputs["logits"].argmax(dim=-1).tolist()
        answers = self.vocabulary.answers
        return [{"question_id": int(qid), "answer": answers[i]} for qid, i in zip(batch["id"], best)]

    def write_predictions(self, predictions: list[dict], path: str) -> None:
        with path_manager.open(path, "w") as handle:
            json.dump([{"question_id": int(r["question_id"]), "answer": str(r["answer"])} for r in predictions], handle)
