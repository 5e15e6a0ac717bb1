"""VQA answers: the official normalisation, the answer vocabulary and soft targets."""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from typing import Iterable, Sequence

import torch

from vlfw.processors.base import Processor
from vlfw.registry import PROCESSORS

# The official VQA evaluation's contraction table (keys are matched after lowercasing, so the
# entries with capitals can never match; they are kept as in the official table).
CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've",
    "couldnt": "couldn't", "couldn'tve": "couldn't've", "couldnt've": "couldn't've",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't",
    "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've",
    "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've",
    "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're",
    "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've",
    "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't",
    "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll",
    "youre": "you're", "youve": "you've",
}

NUMBER_WORDS: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}

ARTICLES = frozenset({"a", "an", "the"})

PUNCTUATION = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<",
               "@", "`", ",", "?", "!"]

_DIGIT_COMMA_DIGIT = re.compile(r"(\d)(,)(\d)")
# The official pattern, kept verbatim: its first group is a (vacuous) negative lookahead, so it
# removes every period not followed by a digit.
_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")
# The official code passes re.UNICODE (== 32) as the `count` argument of sub(), so at most 32
# periods are removed; reproduced for exactness.
_PERIOD_COUNT = int(re.UNICODE)


def clean_whitespace(text: str) -> str:
    """Newlines and tabs become spaces, then surrounding whitespace is stripped (official)."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def process_punctuation(text: str) -> str:
    """The official punctuation rule (see docs/processors_and_metrics.md)."""
    out = text
    has_digit_comma_digit = _DIGIT_COMMA_DIGIT.search(text) is not None
    for mark in PUNCTUATION:
        # the official code tests the original text, not the partly processed one
        if (mark + " " in text or " " + mark in text) or has_digit_comma_digit:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD.sub("", out, count=_PERIOD_COUNT)


def process_digit_article(text: str) -> str:
    """Lowercase, number words to digits, drop articles, official contractions, single spaces."""
    words = []
    for word in text.lower().split():
        word = NUMBER_WORDS.get(word, word)
        if word not in ARTICLES:
            words.append(word)
    return " ".join(CONTRACTIONS.get(word, word) for word in words)


def normalize_answer(text: str) -> str:
    """Whitespace cleaning, then the punctuation rule, then the digits/articles rule."""
    return process_digit_article(process_punctuation(clean_whitespace(text)))


def vocabulary_answer(text: str) -> str:
    """The form answers take in the answer vocabulary: normalised, commas removed."""
    return normalize_answer(text).replace(",", "")


def soft_score(count: int) -> float:
    """Soft target of an answer given by `count` of the 10 annotators: 0, .3, .6, .9, 1."""
    if count <= 0:
        return 0.0
    if count >= 4:
        return 1.0
    return (0.0, 0.3, 0.6, 0.9)[count]


class AnswerVocabulary:
    """The answers a VQA classifier predicts over, in a fixed order."""

    def __init__(self, answers: Iterable[str]) -> None:
        self.answers: list[str] = list(answers)
        self._index: dict[str, int] = {}
        for position, answer in enumerate(self.answers):
            if answer in self._index:
                raise ValueError(f"answer vocabulary: {answer!r} appears twice")
            self._index[answer] = position

    @classmethod
    def from_annotations(cls, multiple_choice_answers: Iterable[str], min_count: int = 9) -> "AnswerVocabulary":
        """Normalised answers occurring at least `min_count` times, most frequent first, ties
        broken alphabetically."""
        counts = Counter(vocabulary_answer(a) for a in multiple_choice_answers)
        counts.pop("", None)
        kept = [a for a, n in counts.items() if n >= min_count]
        kept.sort(key=lambda a: (-counts[a], a))
        return cls(kept)

    def save(self, path: str | os.PathLike) -> None:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump({"answers": self.answers}, handle, ensure_ascii=False, indent=0)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "AnswerVocabulary":
        """Read a file written by `save` (or a plain JSON list of answers)."""
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"{path}: cannot read the answer vocabulary ({error})") from None
        answers = data.get("answers") if isinstance(data, dict) else data
        if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
            raise ValueError(f"{path}: expected a JSON list of answers or {{\"answers\": [...]}}")
        return cls(answers)

    def index(self, answer: str) -> int | None:
        """Position of `answer` (looked up as given, then in its vocabulary form), or None."""
        found = self._index.get(answer)
        if found is None:
            found = self._index.get(vocabulary_answer(answer))
        return found

    def exact_index(self, answer: str) -> int | None:
        """Position of `answer` exactly as given, or None."""
        return self._index.get(answer)

    def counts(self, answers: Sequence[str]) -> Counter:
        """position -> how many of `answers` (in vocabulary form) are that vocabulary answer."""
        counts: Counter = Counter()
        for answer in answers:
            position = self.exact_index(vocabulary_answer(answer))
            if position is not None:
                counts[position] += 1
        return counts

    def has_any(self, answers: Sequence[str]) -> bool:
        """Whether at least one of the answers (in vocabulary form) is in the vocabulary."""
        return any(self.exact_index(vocabulary_answer(a)) is not None for a in answers)

    def __len__(self) -> int:
        return len(self.answers)

    def __contains__(self, answer: object) -> bool:
        return isinstance(answer, str) and self.index(answer) is not None

    def __getitem__(self, position: int) -> str:
        return self.answers[position]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AnswerVocabulary) and other.answers == self.answers

    def __repr__(self) -> str:
        return f"AnswerVocabulary({len(self)} answers)"


@PROCESSORS.register("vqa_answer")
class VQAAnswerProcessor(Processor):
    """Human answers -> soft target FloatTensor (len(vocabulary),).

    Each answer is put in vocabulary form and counted; an answer given n times gets
    soft_score(n). Answers outside the vocabulary contribute nothing.

    `vocabulary`: an AnswerVocabulary, a path to a saved one, or a list of answers (the VQA
    builder injects the one it built). Config params: `vocabulary_path` (a saved vocabulary, used
    when no `vocabulary` is given) and `min_count` (how often an answer must occur among the
    training questions for the builder to put it in the vocabulary; null: the builder's default).
    """

    def __init__(self, vocabulary: AnswerVocabulary | str | Sequence[str] | None = None,
                 vocabulary_path: str | None = None, min_count: int | None = None) -> None:
        super().__init__(vocabulary_path=vocabulary_path, min_count=min_count)
        if vocabulary is None:
            vocabulary = vocabulary_path
        if vocabulary is None:
            raise ValueError("vqa_answer needs a vocabulary (an AnswerVocabulary, a list of answers, or vocabulary_path)")
        self.min_count = min_count
        if isinstance(vocabulary, AnswerVocabulary):
            self.vocabulary = vocabulary
        elif isinstance(vocabulary, (str, os.PathLike)):
            self.vocabulary = AnswerVocabulary.load(vocabulary)
        else:
            self.vocabulary = AnswerVocabulary(vocabulary)

    def __call__(self, answers: Sequence[str]) -> torch.Tensor:  # type: ignore[override]
        target = torch.zeros(len(self.vocabulary), dtype=torch.float32)
        for position, count in self.vocabulary.counts(answers).items():
            target[position] = soft_score(count)
        return target

    def has_target(self, answers: Sequence[str]) -> bool:
        """Whether at least one of the answers is in the vocabulary."""
        return self.vocabulary.has_any(answers)
