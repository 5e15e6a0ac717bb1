"""Captioning metrics with pycocoevalcap: BLEU-1..4 and CIDEr-D (its Cider), PTB-tokenized."""

from __future__ import annotations

import os
import shutil
from typing import Any, Sequence

import torch

from vlfw.data.batch import Batch
from vlfw.errors import ConfigError
from vlfw.metrics.base import Metric
from vlfw.metrics.common import field, output, require_records, sample_keys, to_list
from vlfw.registry import METRICS
from vlfw.tasks import TaskInfo

EXTRA_SCORES = ("meteor", "rouge_l", "spice")


def spice_available() -> bool:
    """Whether pycocoevalcap's SPICE can run offline: it needs the Stanford CoreNLP 3.6.0 jar in
    pycocoevalcap/spice/lib (SPICE otherwise tries to download it)."""
    try:
        import pycocoevalcap.spice.spice as spice_module
    except ImportError:
        return False
    folder = os.path.join(os.path.dirname(spice_module.__file__), "lib")
    return os.path.isfile(os.path.join(folder, "stanford-corenlp-3.6.0.jar")) and shutil.which("java") is not None


def caption_scores(predictions: Sequence[str], references: Sequence[Sequence[str]],
                   extra: Sequence[str] = ()) -> dict[str, float]:
    """BLEU-1..4 and CIDEr (x100) of predictions against reference lists (needs Java); `extra`
    adds "meteor", "rouge_l" and / or "spice" (SPICE needs `spice_available()`)."""
    unknown = sorted(set(extra) - set(EXTRA_SCORES))
    if unknown:
        raise ValueError(f"unknown caption score(s) {unknown}; known: {', '.join(EXTRA_SCORES)}")
    if shutil.which("java") is None:
        raise RuntimeError("caption metrics use pycocoevalcap's PTB tokenizer, which needs Java: install a "
                           "Java runtime (e.g. apt-get install default-jre-headless) and put `java` on PATH")
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} reference lists")
    for i, refs in enumerate(references):
        if not refs:
            raise ValueError(f"caption sample {i} has no reference caption")
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({i: [{"caption": str(r)} for r in refs] for i, refs in enumerate(references)})
    res = tokenizer.tokenize({i: [{"caption": str(p)}] for i, p in enumerate(predictions)})
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    scores = {f"bleu{n + 1}": 100.0 * float(b) for n, b in enumerate(bleu)}
    scores["cider"] = 100.0 * float(cider)
    if "meteor" in extra:
        from pycocoevalcap.meteor.meteor import Meteor

        scores["meteor"] = 100.0 * float(Meteor().compute_score(gts, res)[0])  # its java process ends with it
    if "rouge_l" in extra:
        from pycocoevalcap.rouge.rouge import Rouge

        scores["rouge_l"] = 100.0 * float(Rouge().compute_score(gts, res)[0])
    if "spice" in extra:
        if not spice_available():
            raise RuntimeError("SPICE needs the Stanford CoreNLP 3.6.0 jar in pycocoevalcap/spice/lib")
        from pycocoevalcap.spice.spice import Spice

        scores["spice"] = 100.0 * float(Spice().compute_score(gts, res)[0])
    return scores


def decode_caption(ids: Sequence[int] | torch.Tensor, sep_id: int, tokenizer: Any) -> str:
    """The text of generated ids: the first token (bos) dropped, cut at the first `sep_id` after
    it, decoded with the dataset's tokenizer. The in-run metric and the prediction file share it."""
    ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
    ids = [int(token) for token in ids[1:]]
    if sep_id in ids:
        ids = ids[: ids.index(sep_id)]
    return tokenizer.decode(ids)


@METRICS.register("caption_metrics")
class CaptionMetrics(Metric):
    """Decodes outputs["generated_ids"] and scores them against batch["references"].

    Decoding uses the dataset's own tokenizer (`task_info.text.build_tokenizer()`): the first
    token (bos) is dropped and the caption stops at the first `text.sep_id` after it.
    """

    primary = "cider"

    def __init__(self, task_info: TaskInfo | None = None, **params: Any) -> None:
        super().__init__(task_info=task_info, **params)
        text = getattr(task_info, "text", None)
        if text is None:
            raise ConfigError("metric 'caption_metrics' needs the dataset's TaskInfo with its text ids and tokenizer "
                              "(task_info.text)")
        self.sep_id = int(text.sep_id)
        self.tokenizer = text.build_tokenizer()

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """The text of generated ids: bos dropped, cut at the first sep after it."""
        return decode_caption(ids, self.sep_id, self.tokenizer)

    def update(self, batch: Batch, outputs: dict[str, torch.Tensor]) -> None:
        generated = output(outputs, "generated_ids", "caption_metrics").detach().cpu()
        references = to_list(field(batch, "references", "caption_metrics"))
        for key, ids, refs in zip(sample_keys(batch), generated, references):
            self.add(key, {"prediction": self.decode(ids), "references": [str(r) for r in refs]})

    def summarize(self, records: list[Any]) -> dict[str, float]:
        require_records(records, "caption_metrics")
        return caption_scores([r["prediction"] for r in records], [r["references"] for r in records])
