import dataclasses
import shutil

import pytest
import torch

from vlfw.data.batch import Batch
from vlfw.errors import ConfigError
from vlfw.processors.text import BertTokenizerProcessor
from vlfw.registry import METRICS
from vlfw.tasks import TaskInfo, TextInfo

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="pycocoevalcap's PTB tokenizer needs java")

TEXT = TextInfo(vocab_size=30522, pad_id=0, cls_id=101, sep_id=102, mask_id=103, unk_id=100,
                processor={"type": "bert_tokenizer", "params": {}})
TASK_INFO = TaskInfo(task="captioning", dataset="coco_captioning", visual="images", text=TEXT)


def caption_metrics():
    return METRICS.build("caption_metrics", task_info=TASK_INFO)


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
    metric = caption_metrics()
    assert [metric.decode(row) for row in outputs["generated_ids"]] == texts


def test_decoding_drops_the_first_token_and_uses_the_datasets_sep():
    # a tokenizer whose sequences end in another id: the metric cuts at text.sep_id, not at [SEP]
    ids = BertTokenizerProcessor()("a red bus on the street")["input_ids"].tolist()
    words = ids[1:-1]
    other_sep = TASK_INFO.replace(text=dataclasses.replace(TEXT, sep_id=words[2]))
    metric = METRICS.build("caption_metrics", task_info=other_sep)
    assert metric.decode([words[2]] + words) == "a red"  # the first token is bos, whatever it is
    assert caption_metrics().decode([101, 102] + words) == ""  # an empty caption stays empty


def test_needs_the_text_info():
    with pytest.raises(ConfigError, match="task_info.text"):
        METRICS.build("caption_metrics", task_info=TaskInfo(task="captioning"))


@needs_java
def test_caption_metrics_against_pycocoevalcap_and_across_ranks(check_two_ranks):
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    batch, outputs, texts = _batch()
    result = check_two_ranks(caption_metrics, batch, outputs)
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({i: [{"caption": r} for r in refs] for i, refs in enumerate(batch["references"])})
    res = tokenizer.tokenize({i: [{"caption": t}] for i, t in enumerate(texts)})
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    assert result["bleu4"] == pytest.approx(100 * bleu[3])
    assert result["bleu1"] == pytest.approx(100 * bleu[0])
    assert result["cider"] == pytest.approx(100 * cider)
    assert 0 < result["bleu1"] <= 100 and result["cider"] > 0
