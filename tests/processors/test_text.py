import pickle

import pytest
import torch

from vlfw.processors.text import BertTokenizerProcessor, HFTokenizerProcessor, default_vocab_path
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


# -- the generic hf_tokenizer, with a RoBERTa-style byte-level BPE tokenizer ----------------------


@pytest.fixture(scope="module")
def roberta(roberta_tokenizer_dir):
    return PROCESSORS.get("hf_tokenizer")(path=roberta_tokenizer_dir, max_length=16)


def test_roberta_special_ids_and_registry(roberta, roberta_tokenizer_dir):
    assert PROCESSORS.get("hf_tokenizer") is HFTokenizerProcessor
    assert (roberta.cls_id, roberta.pad_id, roberta.sep_id, roberta.unk_id, roberta.mask_id) == (0, 1, 2, 3, 4)
    assert roberta.vocab_size == len(roberta.tokenizer) > 100
    assert roberta.num_special_tokens(pair=False) == 2 and roberta.num_special_tokens(pair=True) == 4
    assert roberta.spec() == {"type": "hf_tokenizer", "params": {"path": roberta_tokenizer_dir, "max_length": 16}}


def test_roberta_pair_layout_types_and_word_ids(roberta):
    out = roberta("a red circle, left of", "two squares")
    ids = out["input_ids"].tolist()
    tokens = roberta.tokenizer.convert_ids_to_tokens(ids)
    # <s> a </s></s> b </s>
    assert ids[0] == 0 and ids[-1] == 2 and ids.count(2) == 3
    first_sep = ids.index(2)
    assert ids[first_sep + 1] == 2
    assert out["token_type_ids"].tolist() == [0] * len(ids)  # RoBERTa has no token types
    words = out["word_ids"]
    assert words[0] is None and words[first_sep] is None and words[first_sep + 1] is None and words[-1] is None
    # one word id per pre-tokenized word: "a", "Ġred", "Ġcircle", ",", "Ġleft", "Ġof" | "two", "Ġsquares"
    text_words = [w for w in words if w is not None]
    assert text_words == sorted(text_words) and len(set(text_words)) == 8
    pieces_of = {w: [t for t, x in zip(tokens, words) if x == w] for w in set(text_words)}
    assert all(p[0].startswith("\u0120") or w in (0, 3, 6) for w, p in pieces_of.items())


def test_roberta_truncates_longest_first(roberta):
    out = roberta(" ".join(["red circle"] * 20), "two squares")
    ids = out["input_ids"].tolist()
    assert len(ids) == 16 and ids[-1] == 2
    assert roberta.decode(ids[ids.index(2) + 2:]) == "two squares"


def test_roberta_whole_word_masking_masks_whole_words(roberta):
    from vlfw.processors.masking import WholeWordMasking

    masking = WholeWordMasking(probability=0.4, tokenizer=roberta)
    assert masking.mask_id == 4 and masking.special_ids == {0, 1, 2, 3, 4}
    encoded = roberta("a purple zebra unaffably near the orange triangles")  # unseen words: several pieces
    words = encoded["word_ids"]
    assert len([w for w in words if w is not None]) > len(set(w for w in words if w is not None))  # multi-piece words
    for seed in range(30):
        out = masking(encoded, torch.Generator().manual_seed(seed))
        chosen = (out["mlm_labels"] != -100).tolist()
        assert not chosen[0] and not chosen[-1] and any(chosen)
        for word in set(w for w in words if w is not None):
            assert len({c for c, w in zip(chosen, words) if w == word}) == 1  # all pieces or none


def test_roberta_tokenize_words_build_inputs_and_special_tokens_mask(roberta):
    words = ["what", "is", "person", "doing", "?"]
    pieces = roberta.tokenize_words(words)
    assert len(pieces) == 5 and all(pieces)
    # the pieces are those of the words inside the sentence (with their leading space)
    assert [p for w in pieces for p in w] == roberta("what is person doing ?")["input_ids"].tolist()[1:-1]
    out = roberta.build_inputs([p for w in pieces for p in w], pieces[2])
    ids = out["input_ids"].tolist()
    n = sum(len(p) for p in pieces)
    assert ids == [0] + [p for w in pieces for p in w] + [2, 2] + pieces[2] + [2]
    assert out["special_tokens_mask"] == [1] + [0] * n + [1, 1] + [0] * len(pieces[2]) + [1]
    assert out["token_type_ids"].tolist() == [0] * len(ids)
    assert out["word_ids"][0] is None and out["word_ids"][1] == 0 and out["word_ids"][n + 3] is not None


def test_roberta_decode_roundtrip_and_pickling(roberta):
    text = "Two small red circles, left of the blue star."
    assert roberta.decode(roberta(text)["input_ids"]) == text  # byte-level BPE: no lowercasing, spaces kept
    data = pickle.dumps(roberta)
    assert len(data) < 2000 and b"merges" not in data  # params only; rebuilt lazily
    clone = pickle.loads(data)
    assert clone._tokenizer is None
    assert torch.equal(clone(text)["input_ids"], roberta(text)["input_ids"])


def test_hf_tokenizer_on_a_saved_bert_tokenizer_matches_bert_tokenizer(tokenizer, tmp_path):
    tokenizer.tokenizer.save_pretrained(str(tmp_path / "bert"))
    generic = HFTokenizerProcessor(path=str(tmp_path / "bert"), max_length=12)
    for a, b in [("A man unaffably rides", None), ("one two three four five six seven eight", "yes no")]:
        mine, theirs = generic(a, b), tokenizer(a, b)
        assert torch.equal(mine["input_ids"], theirs["input_ids"])
        assert torch.equal(mine["token_type_ids"], theirs["token_type_ids"]) and mine["word_ids"] == theirs["word_ids"]
    pieces = tokenizer.tokenize_words(["unaffably", "dog"])
    assert generic.tokenize_words(["unaffably", "dog"]) == pieces
    built, expected = generic.build_inputs(pieces[0], pieces[1]), tokenizer.build_inputs(pieces[0], pieces[1])
    assert torch.equal(built["input_ids"], expected["input_ids"]) and built["word_ids"] == expected["word_ids"]
    assert expected["special_tokens_mask"] == [1, 0, 0, 0, 1, 0, 1]


def test_hf_tokenizer_missing_directory_is_a_clear_error(tmp_path):
    from vlfw.errors import ConfigError

    with pytest.raises(ConfigError, match="tokenizer directory .* not found.*nothing is downloaded"):
        HFTokenizerProcessor(path=str(tmp_path / "none"))("x")
