import pickle

import pytest
import torch

from vlfw.processors.text import BertTokenizerProcessor, default_vocab_path
from vlfw.registry import PROCESSORS


@pytest.fixture(scope="module")
def tokenizer():
    return BertTokenizerProcessor(max_length=12)


def test_default_vocab_is_the_packaged_file():
    path = default_vocab_path()
    assert path.endswith("model/vocab.txt")
    with open(path, encoding="utf-8") as handle:
        assert handle.readline().strip() == "[PAD]"


def test_registered():
    assert PROCESSORS.get("bert_tokenizer") is BertTokenizerProcessor


def test_special_ids(tokenizer):
    assert (tokenizer.pad_id, tokenizer.unk_id, tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id) == (0, 100, 101, 102, 103)
    assert tokenizer.vocab_size == 30522


def test_single_text_layout_and_word_ids(tokenizer):
    out = tokenizer("A man unaffably rides")
    tokens = tokenizer.tokenizer.convert_ids_to_tokens(out["input_ids"].tolist())
    assert tokens == ["[CLS]", "a", "man", "una", "##ffa", "##bly", "rides", "[SEP]"]
    assert out["input_ids"].dtype == torch.long
    assert out["token_type_ids"].tolist() == [0] * 8
    assert out["word_ids"] == [None, 0, 1, 2, 2, 2, 3, None]


def test_pair_truncates_longer_text_first(tokenizer):
    out = tokenizer("one two three four five six seven eight", "yes no")
    ids = out["input_ids"].tolist()
    assert len(ids) == 12
    assert ids.count(tokenizer.sep_id) == 2
    tokens = tokenizer.tokenizer.convert_ids_to_tokens(ids)
    assert tokens[-4:] == ["[SEP]", "yes", "no", "[SEP]"]
    assert out["token_type_ids"].tolist() == [0] * 9 + [1] * 3
    # words of the second text get distinct ids after the first text's
    assert out["word_ids"][-3:] == [7, 8, None]


def test_tokenize_words_and_build_inputs(tokenizer):
    pieces = tokenizer.tokenize_words(["unaffably", "dog"])
    assert len(pieces[0]) == 3 and len(pieces[1]) == 1
    out = tokenizer.build_inputs(pieces[0] + pieces[1], pieces[1])
    assert out["input_ids"].tolist() == [101] + pieces[0] + pieces[1] + [102] + pieces[1] + [102]
    assert out["word_ids"] == [None, 0, 0, 0, 1, None, 2, None]
    assert out["token_type_ids"].tolist() == [0] * 6 + [1] * 2


def test_build_inputs_truncates(tokenizer):
    out = tokenizer.build_inputs(list(range(2000, 2020)), [3000, 3001])
    ids = out["input_ids"].tolist()
    assert len(ids) == 12
    assert ids[-3:] == [3000, 3001, 102]


def test_decode_roundtrip(tokenizer):
    assert tokenizer.decode(tokenizer("A dog, running.")["input_ids"]) == "a dog, running."


def test_pickles_small_and_works_after(tokenizer):
    tokenizer("warm up")
    data = pickle.dumps(tokenizer)
    assert len(data) < 2000
    clone = pickle.loads(data)
    assert torch.equal(clone("a cat")["input_ids"], tokenizer("a cat")["input_ids"])


def test_missing_vocab_is_a_clear_error(tmp_path):
    with pytest.raises(OSError):
        BertTokenizerProcessor(vocab_path=str(tmp_path / "nope.txt"))("x")
