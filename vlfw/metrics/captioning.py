"""Captioning metrics with pycocoevalcap: BLEU-1..4 and CIDEr-D (its Cider), PTB-tokenized."""

from __future__ import annotations

import shutil
from typing import Any, Sequence

import torch

from vlfw.data.batch import Batch
from vlfw.errors import ConfigError
from vlfw.metrics.base import Metric
from vlfw.metrics.common import field, output, require_records, sample_keys, to_list
from vlfw.registry import METRICS
from vlfw.tasks import TaskInfo


def caption_scores(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """BLEU-1..4 and CIDEr (x100) of predictions against reference lists (needs Java)."""
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
    return scores


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
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        ids = [int(token) for token in ids[1:]]
        if self.sep_id in ids:
            ids = ids[: ids.index(self.sep_id)]
        return self.tokenizer.decode(ids)

    def update(self, batch: Batch, outputs: dict[str, torch.Tensor]) -> None:
        generated = output(outputs, "generated_ids", "caption_metrics").detach().cpu()
        references = to_list(field(batch, "references", "caption_metrics"))
        for key, ids, refs in zip(sample_keys(batch), generated, references):
            self.add(key, {"prediction": self.decode(ids), "references": [str(r) for r in refs]})

    def summarize(self, records: list[Any]) -> dict[str, float]:
        require_records(records, "caption_metrics")
        return caption_scores([r["prediction"] for r in records], [r["references"] for r in records])
