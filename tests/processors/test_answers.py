import pytest
import torch

from vlfw.processors.answers import (
    CONTRACTIONS,
    AnswerVocabulary,
    VQAAnswerProcessor,
    normalize_answer,
    process_digit_article,
    process_punctuation,
    soft_score,
    vocabulary_answer,
)


def test_contraction_table_is_the_official_size():
    assert 100 <= len(CONTRACTIONS) <= 130
    assert CONTRACTIONS["dont"] == "don't" and CONTRACTIONS["whats"] == "what's"


@pytest.mark.parametrize("text, expected", [
    ("yes!", "yes "),            # replaced by a space (no adjacent space)
    ("yes !", "yes "),           # deleted (space before it)
    ("1,000", "1000"),           # digit-comma-digit: every punctuation mark is deleted
    ("red,blue", "red blue"),
    ("a-b c", "a b c"),
    ("3.5 ft.", "3.5 ft"),       # a period followed by a digit stays
    ("x.y", "xy"),
])
def test_process_punctuation(text, expected):
    assert process_punctuation(text) == expected


def test_period_removal_stops_after_32_like_the_official_code():
    assert process_punctuation("." * 40) == "." * 8


@pytest.mark.parametrize("text, expected", [
    ("Two Dogs", "2 dogs"),
    ("none", "0"),
    ("The  cat  an  apple", "cat apple"),
    ("dont know", "don't know"),
    ("ten", "10"),
])
def test_process_digit_article(text, expected):
    assert process_digit_article(text) == expected


def test_normalize_and_vocabulary_forms():
    assert normalize_answer(" The Dog.\n") == "dog"
    assert normalize_answer("one\tdog") == "1 dog"
    assert vocabulary_answer("red, white") == "red white"
    assert vocabulary_answer("1,000") == "1000"


def test_soft_score():
    assert [soft_score(n) for n in range(6)] == [0.0, 0.3, 0.6, 0.9, 1.0, 1.0]


def test_vocabulary_order_threshold_and_io(tmp_path):
    answers = ["Yes"] * 5 + ["no"] * 5 + ["two"] * 3 + ["2"] * 3 + ["cat"] * 2
    vocab = AnswerVocabulary.from_annotations(answers, min_count=3)
    assert vocab.answers == ["2", "no", "yes"]  # 6 x "2", then 5/5 ties alphabetically
    assert len(vocab) == 3 and "yes" in vocab and "cat" not in vocab
    assert vocab.index("no") == 1 and vocab.index("Two") == 0 and vocab.index("cat") is None
    vocab.save(tmp_path / "answers.json")
    assert AnswerVocabulary.load(tmp_path / "answers.json") == vocab


def test_soft_targets():
    processor = VQAAnswerProcessor(vocabulary=AnswerVocabulary(["yes", "no", "2"]))
    target = processor(["yes"] * 7 + ["two", "no", "purple"])
    assert target.dtype == torch.float32
    assert torch.allclose(target, torch.tensor([1.0, 0.3, 0.3]))
    assert processor.has_target(["purple", "No"])
    assert not processor.has_target(["purple"] * 10)
    assert processor(["purple"] * 10).sum() == 0
