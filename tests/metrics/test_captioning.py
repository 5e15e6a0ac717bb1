import shutil

import pytest
import torch

from vlfw.data.batch import Batch
from vlfw.processors.text import BertTokenizerProcessor
from vlfw.registry import METRICS

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="pycocoevalcap's PTB tokenizer needs java")


def _batch():
    tokenizer = BertTokenizerProcessor(max_length=20)
    texts = ["a man riding a horse", "two dogs play in the snow", "a red bus on the street", "a cat"]
    ids = [tokenizer(t)["input_ids"].tolist() + [0, 0, 2003] for t in texts]  # junk after [SEP] is ignored
    width = max(len(i) for i in ids)
    generated = torch.tensor([i + [0] * (width - len(i)) for i in ids])
    references = [
        ["a man riding a horse", "a person rides a brown horse", "man on a horse"],
        ["two dogs playing in the snow", "dogs run through snow"],
        ["a red bus driving down a street", "a bus on a city street"],
        ["a dog on a couch", "a sleeping dog"],
    ]
    return Batch(index=torch.arange(4), references=references), {"generated_ids": generated}, texts


def test_decoding_stops_at_sep():
    batch, outputs, texts = _batch()
    metric = METRICS.build("caption_metrics", task_info={"task": "captioning"})
    assert [metric.decode(row) for row in outputs["generated_ids"]] == texts


@needs_java
def test_caption_metrics_against_pycocoevalcap_and_across_ranks(check_two_ranks):
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    batch, outputs, texts = _batch()
    result = check_two_ranks(lambda: METRICS.build("caption_metrics", task_info={"task": "captioning"}),
                             batch, outputs)
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({i: [{"caption": r} for r in refs] for i, refs in enumerate(batch["references"])})
    res = tokenizer.tokenize({i: [{"caption": t}] for i, t in enumerate(texts)})
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    assert result["bleu4"] == pytest.approx(100 * bleu[3])
    assert result["bleu1"] == pytest.approx(100 * bleu[0])
    assert result["cider"] == pytest.approx(100 * cider)
    assert 0 < result["bleu1"] <= 100 and result["cider"] > 0
