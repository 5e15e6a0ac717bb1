"""Tasks and task infos: the contract between a dataset, the model serving it and evaluation.

A *task* (``TASKS``) is a kind of problem: VQA, REC, retrieval, captioning... It names the head
a dataset of that task gets by default, the features that head reads from the model, the outputs
losses and metrics read, and whether evaluation generates (calls ``model.generate``). A plugin
adds a task without touching the core::

    from vlfw.registry import TASKS
    from vlfw.tasks import Task

    @TASKS.register("phrase_grounding")
    class PhraseGrounding(Task):
        head = "dense_grounding"            # a HEADS name, or None: the model's outputs are final
        features = ("image_token_states", "text_token_states")
        outputs = ("box_logits", "boxes")

A *task info* (``TaskInfo``) is what one dataset tells the model it serves: its task, its visual
input, the tokenizer's ids, the size of its answer space. Builders return it from
``task_info()``; models, heads, losses and metrics receive it; nothing else travels between them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from vlfw.errors import ConfigError
from vlfw.registry import TASKS


@dataclass(frozen=True)
class TextInfo:
    """The tokenizer a dataset encodes its text with, as far as a model needs to know it.

    `cls_id` starts every sequence ([CLS], or <s> for RoBERTa) and is the first token of a
    generated caption; `sep_id` ends a segment ([SEP], </s>) and ends generation; `pad_id` fills
    padded positions (0 for BERT, 1 for RoBERTa). `processor` is the registry spec
    ``{"type": ..., "params": {...}}`` that rebuilds the tokenizer (metrics decode with it).
    """

    vocab_size: int
    pad_id: int
    cls_id: int
    sep_id: int
    mask_id: int | None = None
    unk_id: int | None = None
    processor: Mapping[str, Any] = field(default_factory=dict, hash=False)  # a dict: compared, not hashed

    @property
    def special_ids(self) -> frozenset[int]:
        return frozenset(i for i in (self.pad_id, self.cls_id, self.sep_id, self.mask_id, self.unk_id) if i is not None)

    def build_tokenizer(self):
        """A new tokenizer processor from `processor` (the one the dataset used)."""
        from vlfw.registry import PROCESSORS

        if not self.processor or "type" not in self.processor:
            raise ConfigError("this TextInfo carries no tokenizer spec ({'type': ..., 'params': ...})")
        return PROCESSORS.get(str(self.processor["type"]))(**dict(self.processor.get("params") or {}))


@dataclass(frozen=True)
class TaskInfo:
    """What one dataset tells the model (and its heads, losses and metrics).

    `task`: a TASKS name. `dataset`: the dataset's name in the run. `visual`: "images",
    "regions" or None (text only). `num_images`: images per sample (NLVR2: 2). The answer space:
    `num_answers`/`answers` (VQA), `num_labels`/`labels` (classification), `num_choices` (VCR).
    Region features: `region_feature_size` (D) and `detector_classes` (C, when the features carry
    class scores) with `detector_class_names` when known, and `region_feature_mean` /
    `region_feature_std` (D each) when the builder fitted the feature normalisation. `extra`: anything a plugin's dataset
    adds for its own model (plain values only, so that it pickles and prints).
    """

    task: str
    dataset: str = ""
    visual: str | None = None
    text: TextInfo | None = None
    num_images: int = 1
    num_answers: int | None = None
    answers: tuple[str, ...] | None = None
    num_labels: int | None = None
    labels: tuple[str, ...] | None = None
    num_choices: int | None = None
    region_feature_size: int | None = None
    detector_classes: int | None = None
    detector_class_names: tuple[str, ...] | None = None
    # per-dimension train-split statistics of the region features (features.normalize; RegionFeatureNorm)
    region_feature_mean: tuple[float, ...] | None = field(default=None, repr=False)
    region_feature_std: tuple[float, ...] | None = field(default=None, repr=False)
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)  # a dict: compared, not hashed

    @property
    def num_outputs(self) -> int:
        """The size of a classifier over this dataset's answers (or labels)."""
        for value in (self.num_answers, self.num_labels):
            if value is not None:
                return int(value)
        raise ConfigError(f"dataset {self.dataset!r} (task {self.task!r}) has neither answers nor labels to classify")

    def replace(self, **changes: Any) -> "TaskInfo":
        return dataclasses.replace(self, **changes)

    @property
    def spec(self) -> "type[Task]":
        """The registered Task of `task`."""
        return TASKS.get(self.task)


class Task:
    """A kind of task. Subclass it, set the attributes, register it with ``TASKS.register(name)``.

    head: the HEADS name a dataset of this task gets unless its model or config names another;
        None when the model's outputs are final (pre-training objectives, captioning).
    features: the model features that default head reads (docs/writing_a_plugin.md lists the
        standard names); checked against what the model declares it gives for the task.
    outputs: the model outputs this task's losses and metrics read (documentation and checks).
    generative: evaluation calls ``model.generate(batch, **generation)`` and passes its
        ``generated_ids`` to the metrics instead of calling the model's forward.
    """

    head: str | None = None
    features: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    generative: bool = False
    description: str = ""


@TASKS.register("pretraining")
class Pretraining(Task):
    description = "the model's own objectives (loss/<name> outputs)"


@TASKS.register("vqa")
class VisualQuestionAnswering(Task):
    head = "classifier"
    features = ("pooled",)
    outputs = ("logits",)
    description = "open-ended answers as classification over an answer vocabulary (soft targets)"


@TASKS.register("classification")
class Classification(Task):
    head = "classifier"
    features = ("pooled",)
    outputs = ("logits",)
    description = "one label per image-text pair (SNLI-VE)"


@TASKS.register("nlvr2")
class PairClassification(Task):
    head = "pair_classifier"
    features = ("pooled_pair",)
    outputs = ("logits",)
    description = "a statement about two images: true or false"


@TASKS.register("rec")
class ReferringExpressions(Task):
    head = "region_scorer"
    features = ("region_states",)
    outputs = ("region_logits",)
    description = "pick the candidate box an expression refers to"


@TASKS.register("grounding")
class PhraseGroundingOnCandidates(Task):
    head = "region_scorer"
    features = ("region_states",)
    outputs = ("region_logits",)
    description = "rank candidate boxes for a phrase of a sentence (Flickr30k Entities)"


@TASKS.register("vcr")
class VisualCommonsense(Task):
    head = "choice_scorer"
    features = ("answer_pooled",)
    outputs = ("answer_logits",)
    description = "four answer choices and four rationales per question"


@TASKS.register("retrieval")
class Retrieval(Task):
    head = "embedding"
    features = ("image_pooled", "text_pooled")
    outputs = ("image_embeddings", "text_embeddings")
    description = "image-text retrieval by embedding similarity (dual encoder)"


@TASKS.register("captioning")
class Captioning(Task):
    outputs = ("caption_logits",)
    generative = True
    description = "caption generation: teacher-forced logits in training, generate() in evaluation"


def text_settings(task_infos: Mapping[str, TaskInfo], vocab_size: Any = None) -> tuple[int, int]:
    """(vocabulary size, padding id) of the datasets' tokenizer (one tokenizer per run; BERT's
    30522 and 0 when no dataset has text). `vocab_size` (a model's setting) overrides the size."""
    texts = {info.text for info in task_infos.values() if info.text is not None}
    pads = {t.pad_id for t in texts}
    sizes = {t.vocab_size for t in texts}
    if len(pads) > 1 or len(sizes) > 1:
        raise ConfigError(f"the datasets of this run use different tokenizers (vocabulary sizes {sorted(sizes)}, "
                          f"padding ids {sorted(pads)}); give them the same processors.text")
    size = int(vocab_size) if vocab_size is not None else (sizes.pop() if sizes else 30522)
    return size, (pads.pop() if pads else 0)
