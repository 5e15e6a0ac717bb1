"""Anchor points (CMAL): the regions and caption words that name the same thing.

Per sample: each region's tag is the detector's argmax class (background excluded); the
caption's words are its tokens with word pieces merged back (each word keeps its token
positions); tags and words both go through a `Thesaurus`; the anchors are the (region, word)
pairs whose terms meet. `find_anchors` is the pure function, `anchor_points` the processor a
dataset's sample mapper calls (docs/thesaurus.md).
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, NamedTuple, Sequence

import torch

from vlfw.errors import ConfigError, DataError
from vlfw.processors.base import Processor
from vlfw.processors.thesaurus import Thesaurus
from vlfw.registry import PROCESSORS


class CaptionWord(NamedTuple):
    """One word of a tokenized caption: its text (pieces merged) and its token positions."""

    text: str
    tokens: tuple[int, ...]


class AnchorPoint(NamedTuple):
    """A region and the caption word (or phrase) it anchors: token positions in input_ids."""

    region: int
    tokens: tuple[int, ...]
    term: str


def caption_words(tokens: Sequence[str], word_ids: Sequence[int | None], continuing_prefix: str | None = "##",
                  join_tokens: Any = None, skip: Sequence[int] = ()) -> list[CaptionWord]:
    """Merge a tokenized caption's pieces into words by their word ids.

    `tokens`: the token strings; `word_ids`: the word of each token (None for special tokens);
    `continuing_prefix`: the WordPiece prefix stripped from continuing pieces ("cub", "##es" ->
    "cubes"); when None, `join_tokens(list of token strings) -> text` joins them (byte-level BPE).
    Positions in `skip` (special tokens) belong to no word.
    """
    if len(tokens) != len(word_ids):
        raise ValueError(f"caption_words: {len(word_ids)} word ids for {len(tokens)} tokens")
    skipped = set(skip)
    grouped: dict[int, list[int]] = {}
    for position, word in enumerate(word_ids):
        if word is None or position in skipped:
            continue
        grouped.setdefault(int(word), []).append(position)
    words = []
    for word in sorted(grouped, key=lambda w: grouped[w][0]):
        positions = grouped[word]
        pieces = [str(tokens[p]) for p in positions]
        if continuing_prefix is not None:
            text = pieces[0] + "".join(p[len(continuing_prefix):] if p.startswith(continuing_prefix) else p
                                       for p in pieces[1:])
        elif join_tokens is not None:
            text = str(join_tokens(pieces)).strip()
        else:
            text = "".join(pieces)
        words.append(CaptionWord(text, tuple(positions)))
    return words


def region_tags(class_probs: torch.Tensor, class_names: Sequence[str], background: int | str | None = 0) -> list[str | None]:
    """Each region's tag: the name of its argmax class, or None for the background class.

    `class_names` has one name per column of `class_probs` (N, C), or C - 1 names when column 0
    is an unnamed background (the Visual Genome layout: 1601 scores, 1600 names). `background`:
    the background's column index, or its name, or None (no background class).
    """
    if class_probs.dim() != 2:
        raise ValueError(f"region class scores must be (N, C), got shape {tuple(class_probs.shape)}")
    columns = int(class_probs.shape[1])
    names = [str(n) for n in class_names]
    if len(names) == columns:
        offset = 0
    elif len(names) == columns - 1 and background == 0:
        offset = 1  # column 0 is the background, names start at column 1
    else:
        raise ValueError(f"{len(names)} detector class names for {columns} class scores per region; give one name "
                         "per score column (or one fewer when column 0 is the background)")
    if isinstance(background, str):
        background_index = names.index(background) + offset if background in names else None
        if background_index is None:
            raise ValueError(f"background class {background!r} is not a detector class name")
    else:
        background_index = None if background is None else int(background)
    tags: list[str | None] = []
    if columns == 0:
        return [None] * int(class_probs.shape[0])
    for index in class_probs.argmax(dim=1).tolist():
        if index == background_index or index - offset < 0:
            tags.append(None)
        else:
            tags.append(names[index - offset])
    return tags


def find_anchors(tags: Sequence[str | None], words: Sequence[CaptionWord | str], thesaurus: Thesaurus) -> list[AnchorPoint]:
    """The anchors of one sample: every (region, caption word) whose terms meet.

    `tags`: each region's tag (None: no tag, e.g. background); `words`: the caption's words
    (`CaptionWord`s, or plain strings whose "token positions" are their word indices). A word
    (or phrase) anchors every region whose tag shares its term, so several regions of one class
    all anchor it. Sorted by token position, then region.
    """
    texts = [w.text if isinstance(w, CaptionWord) else str(w) for w in words]
    positions = [w.tokens if isinstance(w, CaptionWord) else (k,) for k, w in enumerate(words)]
    tag_terms = {tag: thesaurus.tag_terms(tag) for tag in set(t for t in tags if t is not None)}
    anchors = []
    for term, indices in thesaurus.match_words(texts):
        tokens = tuple(p for k in indices for p in positions[k])
        for region, tag in enumerate(tags):
            if tag is not None and term in tag_terms[tag]:
                anchors.append(AnchorPoint(region, tokens, term))
    anchors.sort(key=lambda a: (a.tokens[0] if a.tokens else -1, a.region))
    return anchors


def anchor_fields(anchors: Sequence[AnchorPoint], num_tokens: int) -> dict[str, torch.Tensor]:
    """The batch fields of one sample's anchors (A anchors, L tokens; collate pads A and L):

    `anchor_region_index` (A,) long, `anchor_token_index` (A,) long (the word's first token,
    its CMAP slot), `anchor_token_mask` (A, L) bool (every token of the word or phrase) and
    `anchor_mask` (A,) bool, True for a real anchor (False where collate padded).
    """
    count = len(anchors)
    token_mask = torch.zeros(count, int(num_tokens), dtype=torch.bool)
    for k, anchor in enumerate(anchors):
        token_mask[k, list(anchor.tokens)] = True
    return {
        "anchor_region_index": torch.tensor([a.region for a in anchors], dtype=torch.long),
        "anchor_token_index": torch.tensor([a.tokens[0] for a in anchors], dtype=torch.long),
        "anchor_token_mask": token_mask,
        "anchor_mask": torch.ones(count, dtype=torch.bool),
    }


def read_class_names(path: str) -> list[str]:
    """Detector class names from a JSON list or a text file of one name per line."""
    from vlfw.datasets.records import path_manager

    try:
        with path_manager.open(path, "r", encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise DataError(f"{path}: detector class file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read the detector class file ({error})") from None
    if text.lstrip()[:1] in ("[", "{"):  # JSON (a list); anything else is one name per line
        try:
            names = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}: not valid JSON at line {error.lineno} column {error.colno} ({error.msg})") from None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise DataError(f"{path}: a JSON class file is a list of class name strings")
        return list(names)
    return [line.strip() for line in text.splitlines() if line.strip()]


@PROCESSORS.register("anchor_points")
class AnchorPointDetector(Processor):
    """CMAL anchor points of one sample: (tokenizer encoding, region class scores) -> anchors.

    Params: `thesaurus`, a shipped thesaurus name ("shapes") or a thesaurus file path;
    `class_names`, the detector's class names (a JSON list or one-per-line file; a dataset
    builder may pass the list itself); `background`, the background class (its column index,
    default 0, or its name; null: none). `tokenizer` (a text processor) is injected by the
    dataset builder. Every class name that is no thesaurus entry is added as a term of its own.
    Picklable: holds the thesaurus (plain dicts) and the text processor.
    """

    def __init__(self, thesaurus: str, class_names: str | Sequence[str] | None = None, background: int | str | None = 0,
                 tokenizer: Any = None) -> None:
        super().__init__(thesaurus=thesaurus, class_names=class_names, background=background)
        if isinstance(background, bool) or not (background is None or isinstance(background, (int, str))):
            raise ConfigError(f"anchor_points: background must be a class index, a class name or null, got {background!r}")
        self.base_thesaurus = Thesaurus.load(str(thesaurus))
        self.background = background
        self.tokenizer = tokenizer
        self._special_ids: frozenset[int] | None = None  # [UNK] stays a word: it just matches nothing
        self.class_names: list[str] | None = None
        self.thesaurus = self.base_thesaurus
        if class_names is not None:
            self.set_class_names(read_class_names(os.path.expanduser(class_names)) if isinstance(class_names, str)
                                 else list(class_names))

    def set_class_names(self, names: Sequence[str]) -> None:
        """Use these detector class names (a builder passes those of its feature files)."""
        names = [str(n) for n in names]
        if not names:
            raise ConfigError("anchor_points: the detector class name list is empty")
        self.class_names = names
        # a background name that becomes a term is harmless: background regions get no tag
        self.thesaurus = self.base_thesaurus.with_terms(n for n in names if n != self.background)

    def words(self, encoding: Mapping[str, Any]) -> list[CaptionWord]:
        """The caption's words with their token positions, from a text processor's encoding."""
        if self.tokenizer is None:
            raise ConfigError("anchor_points needs the dataset's text processor (tokenizer), passed by the builder")
        if encoding.get("word_ids") is None:
            raise ConfigError("anchor_points: the encoding has no word_ids; use a text processor that gives them "
                              "(bert_tokenizer, hf_tokenizer)")
        ids = encoding["input_ids"]
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else [int(i) for i in ids]
        hf = self.tokenizer.tokenizer
        tokens = hf.convert_ids_to_tokens(ids)
        prefix = getattr(hf.backend_tokenizer.model, "continuing_subword_prefix", None)
        if self._special_ids is None:
            self._special_ids = frozenset(self.tokenizer.special_ids) - {self.tokenizer.unk_id}
        special = [p for p, i in enumerate(ids) if i in self._special_ids]
        return caption_words(tokens, encoding["word_ids"], prefix or None, hf.convert_tokens_to_string, special)

    def tags(self, region_class_probs: torch.Tensor) -> list[str | None]:
        if self.class_names is None:
            raise ConfigError("anchor_points: set params.class_names (the detector's class file) or use a dataset "
                              "whose builder passes its detector class names")
        try:
            return region_tags(region_class_probs, self.class_names, self.background)
        except ValueError as error:
            raise DataError(f"anchor_points: {error}") from None

    def __call__(self, encoding: Mapping[str, Any], region_class_probs: torch.Tensor | None) -> list[AnchorPoint]:  # type: ignore[override]
        """The anchors of one caption (a text processor's output) and its regions' class scores."""
        if region_class_probs is None:
            raise DataError("anchor_points needs the regions' detector class scores (region_class_probs): use "
                            "visual=regions with features.format=npy, whose _info.npy files hold cls_prob")
        return find_anchors(self.tags(region_class_probs), self.words(encoding), self.thesaurus)

    def sample_fields(self, encoding: Mapping[str, Any], region_class_probs: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """`anchor_fields` of this sample's anchors: what a mapper adds to its Sample."""
        return anchor_fields(self(encoding, region_class_probs), len(encoding["input_ids"]))


def build_anchor_processor(builder: Any, role: str = "anchors") -> AnchorPointDetector | None:
    """The `processors.<role>` of a native dataset builder (None when the node is absent or off),
    with the builder's text processor injected and, unless params.class_names is set, the
    detector class names of its feature files (features/classes.json next to them)."""
    node = builder.option(f"processors.{role}")
    if node is None or (isinstance(node, dict) and node.get("type") is None):
        return None
    processor = builder.build_processor(role, tokenizer=builder.text_processor)
    if getattr(processor, "class_names", "") is None:
        names = builder.detector_class_names()
        if names is None:
            raise ConfigError(f"dataset_config.{builder.name}.processors.{role}: the dataset has no detector class "
                              "file; set params.class_names")
        processor.set_class_names(names)
    return processor
