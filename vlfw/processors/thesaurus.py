"""A thesaurus that maps the words of captions and the names of detector classes to canonical terms.

The thesaurus is data: a JSON file (docs/thesaurus.md) read with `json` only, never executed.
Its layers, applied in this order by `normalise`:

1. folding (automatic): case folding, accents stripped, `_` read as a space, punctuation split
   off as its own word ("T-Shirt" -> "t - shirt", the way a BERT tokenizer splits it);
2. the entries of the file: `terms` (the automatic base, usually one per detector class, written
   by tools/build_thesaurus.py), `synonyms` and `abbreviations`, each `canonical -> [variants]`;
3. plural and singular (automatic, `options.plurals`): when the folded text is no entry, its last
   word with -s / -es / -ies->y taken off, then with +s / +es / y->ies put on, is looked up.

Multi-word detector classes (`options.split_multiword_tags`) also give each of their words as a
term, so "traffic light" matches a caption's "traffic light" (as a phrase) and its "light".
Captions are matched phrase first: the longest run of words that is an entry wins.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import re
import unicodedata
from typing import Any, Iterable, Mapping, Sequence

from vlfw.errors import ConfigError, DataError

FORMAT = "vlfw-thesaurus"
VERSION = 1
SECTIONS = ("terms", "synonyms", "abbreviations")
DEFAULT_OPTIONS: dict[str, Any] = {"plurals": True, "split_multiword_tags": True, "stopwords": []}
TOP_LEVEL_KEYS = ("format", "version", "name", "description", "options", "meta") + SECTIONS
BUILTIN_PACKAGE = "vlfw.data"
BUILTIN_DIRECTORY = "thesauri"

_WORD = re.compile(r"[^\W_]+|[^\w\s]")


def fold(text: str) -> str:
    """The lookup key of a word or phrase: case-folded, accents stripped, `_` read as a space,
    punctuation split off, single spaces."""
    decomposed = unicodedata.normalize("NFKD", str(text).casefold().replace("_", " "))
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(_WORD.findall(plain))


def singular_forms(word: str) -> list[str]:
    """Candidate singulars of a folded word, in the order they are tried: -s, -es, -ies -> y."""
    forms = []
    if word.endswith("s") and not word.endswith("ss") and len(word) > 2:
        forms.append(word[:-1])
    if word.endswith("es") and len(word) > 3:
        forms.append(word[:-2])
    if word.endswith("ies") and len(word) > 4:
        forms.append(word[:-3] + "y")
    return forms


def plural_forms(word: str) -> list[str]:
    """Candidate plurals of a folded word of 3 letters or more, in the order they are tried: +s,
    +es, y -> ies (shorter words are too often fragments: "bu" is no "bus")."""
    if len(word) < 3 or not word[-1].isalpha():
        return []
    forms = [word + "s", word + "es"]
    if word.endswith("y") and len(word) > 2:
        forms.append(word[:-1] + "ies")
    return forms


def inflections(key: str) -> list[str]:
    """The folded phrase with its last word made singular, then plural (candidates, in order)."""
    head, _, last = key.rpartition(" ")
    prefix = head + " " if head else ""
    return [prefix + form for form in singular_forms(last) + plural_forms(last)]


def _is_word(token: str) -> bool:
    return bool(token) and any(c.isalnum() for c in token)


def _strict_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json object hook: a key given twice is an error (json would keep the last silently)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def builtin_directory() -> Any:
    """The directory of the thesauri shipped with vlfw (vlfw/data/thesauri)."""
    return importlib.resources.files(BUILTIN_PACKAGE).joinpath(BUILTIN_DIRECTORY)


def builtin_thesauri() -> list[str]:
    """Names of the shipped thesauri ("shapes", ...)."""
    directory = builtin_directory()
    if not directory.is_dir():
        return []
    return sorted(entry.name[:-5] for entry in directory.iterdir() if entry.name.endswith(".json"))


def resolve_thesaurus(name_or_path: str) -> str:
    """The file of a shipped thesaurus name ("shapes") or of a path; ConfigError when neither exists."""
    from vlfw.datasets.records import path_manager

    text = os.path.expanduser(str(name_or_path))
    if not text:
        raise ConfigError("thesaurus: give a shipped thesaurus name "
                          f"({', '.join(builtin_thesauri()) or 'none shipped'}) or the path of a thesaurus file")
    looks_like_path = os.sep in text or "/" in text or text.endswith(".json")
    if not looks_like_path:
        candidate = builtin_directory().joinpath(f"{text}.json")
        if candidate.is_file():
            return str(candidate)
    if path_manager.exists(text):
        return text
    known = ", ".join(builtin_thesauri()) or "none"
    raise ConfigError(f"thesaurus {name_or_path!r}: no such file and no shipped thesaurus of that name "
                      f"(shipped: {known}); see docs/thesaurus.md")


class Thesaurus:
    """Canonical terms and their variants; `normalise(word)`, `tag_terms(class_name)`, `match_words(words)`.

    Build with `Thesaurus.load(name_or_path)` or `Thesaurus.from_dict(data, source)`. Holds plain
    dicts only, so it pickles with the sample mapper.
    """

    def __init__(self, sections: Mapping[str, Mapping[str, Sequence[str]]], options: Mapping[str, Any] | None = None,
                 source: str = "<thesaurus>", name: str = "", description: str = "") -> None:
        self.source = source
        self.name = name
        self.description = description
        self.options = {**DEFAULT_OPTIONS, **dict(options or {})}
        self.sections = {section: {str(k): [str(v) for v in values] for k, values in (sections.get(section) or {}).items()}
                         for section in SECTIONS}
        self.stopwords = frozenset(fold(w) for w in self.options["stopwords"])
        self._canonical = self._resolve()
        self._tag_cache: dict[str, frozenset[str]] = {}
        self.max_phrase_words = max((len(key.split(" ")) for key in self._canonical), default=1)

    # -- building ---------------------------------------------------------------------------
    def _error(self, message: str) -> DataError:
        return DataError(f"{self.source}: {message}; see docs/thesaurus.md for the thesaurus format")

    def _resolve(self) -> dict[str, str]:
        """folded key -> canonical term; every variant resolved through chains, conflicts refused."""
        links: dict[str, str] = {}  # folded variant -> folded canonical it was listed under
        where: dict[str, str] = {}
        canonicals: list[str] = []
        for section in SECTIONS:
            for canonical, variants in self.sections[section].items():
                head = fold(canonical)
                if not _is_word(head):
                    raise self._error(f"{section}: the term {canonical!r} has no letters or digits")
                canonicals.append(head)
                for variant in variants:
                    key = fold(variant)
                    if not _is_word(key):
                        raise self._error(f"{section}.{canonical}: the variant {variant!r} has no letters or digits")
                    if key == head:
                        continue
                    if key in links and links[key] != head:
                        raise self._error(f"the variant {variant!r} is listed under two terms, {links[key]!r} "
                                          f"({where[key]}) and {head!r} ({section}); keep one")
                    links[key] = head
                    where[key] = section
        table: dict[str, str] = {}
        for head in canonicals:
            table.setdefault(head, head)
        for key in links:
            chain = [key]
            target = links[key]
            while target in links:  # a term listed as another term's variant maps on to that term
                if target in chain:
                    raise self._error(f"the terms {' -> '.join(chain + [target])} are variants of each other in a "
                                      "cycle; make one of them the canonical term")
                chain.append(target)
                target = links[target]
            table[key] = target
        if self.options["split_multiword_tags"]:
            for canonical in self.sections["terms"]:
                head = fold(canonical)
                if " " not in head:
                    continue
                for word in head.split(" "):
                    if _is_word(word) and word not in self.stopwords:
                        table.setdefault(word, word)
        return table

    @classmethod
    def from_dict(cls, data: Any, source: str = "<thesaurus>") -> "Thesaurus":
        """Validate a parsed thesaurus document (the JSON format of docs/thesaurus.md)."""
        def error(message: str) -> DataError:
            return DataError(f"{source}: {message}; see docs/thesaurus.md for the thesaurus format")

        if not isinstance(data, dict):
            raise error(f"a thesaurus file holds a JSON object, not {_kind(data)}")
        unknown = sorted(set(data) - set(TOP_LEVEL_KEYS))
        if unknown:
            raise error(f"unknown top-level key(s) {', '.join(map(repr, unknown))}; known: {', '.join(TOP_LEVEL_KEYS)}")
        if data.get("format", FORMAT) != FORMAT:
            raise error(f"format is {data.get('format')!r}, expected {FORMAT!r}")
        version = data.get("version", VERSION)
        if not isinstance(version, int) or isinstance(version, bool) or version != VERSION:
            raise error(f"version is {version!r}; this vlfw reads version {VERSION}")
        for key in ("name", "description"):
            if not isinstance(data.get(key, ""), str):
                raise error(f"{key} must be a string, not {_kind(data[key])}")
        if not isinstance(data.get("meta", {}), dict):
            raise error(f"meta must be an object, not {_kind(data['meta'])}")
        options = data.get("options", {})
        if not isinstance(options, dict):
            raise error(f"options must be an object, not {_kind(options)}")
        unknown = sorted(set(options) - set(DEFAULT_OPTIONS))
        if unknown:
            raise error(f"unknown option(s) {', '.join(map(repr, unknown))}; known: {', '.join(DEFAULT_OPTIONS)}")
        for key in ("plurals", "split_multiword_tags"):
            if key in options and not isinstance(options[key], bool):
                raise error(f"options.{key} must be true or false, not {_kind(options[key])}")
        stopwords = options.get("stopwords", [])
        if not isinstance(stopwords, list) or not all(isinstance(w, str) for w in stopwords):
            raise error("options.stopwords must be a list of strings")
        sections: dict[str, dict[str, list[str]]] = {}
        for section in SECTIONS:
            entries = data.get(section, {})
            if not isinstance(entries, dict):
                raise error(f"{section} must be an object mapping each canonical term to a list of variants, "
                            f"not {_kind(entries)}")
            for canonical, variants in entries.items():
                if not isinstance(variants, list):
                    raise error(f"{section}.{canonical} must be a list of variant strings, not {_kind(variants)}")
                bad = [v for v in variants if not isinstance(v, str)]
                if bad:
                    raise error(f"{section}.{canonical}: every variant must be a string, found {_kind(bad[0])} {bad[0]!r}")
            sections[section] = entries
        if not any(sections.values()):
            raise error(f"the thesaurus has no entries: give at least one of {', '.join(SECTIONS)}")
        return cls(sections, options, source=source, name=str(data.get("name", "")),
                   description=str(data.get("description", "")))

    @classmethod
    def load(cls, name_or_path: str) -> "Thesaurus":
        """A shipped thesaurus by name ("shapes") or a thesaurus file by path (read as JSON only)."""
        from vlfw.datasets.records import path_manager

        path = resolve_thesaurus(name_or_path)
        try:
            with path_manager.open(path, "r", encoding="utf-8") as handle:
                text = handle.read()
        except OSError as error:
            raise DataError(f"{path}: cannot read the thesaurus file ({error})") from None
        except UnicodeDecodeError:
            raise DataError(f"{path}: the thesaurus file is not UTF-8 text") from None
        try:
            data = json.loads(text, object_pairs_hook=_strict_pairs)
        except _DuplicateKey as duplicate:
            raise DataError(f"{path}: the key {duplicate.key!r} appears twice in one object; JSON would keep only "
                            "the last: merge the two entries") from None
        except json.JSONDecodeError as error:
            raise DataError(f"{path}: not valid JSON at line {error.lineno} column {error.colno} ({error.msg}); "
                            "fix the thesaurus file (docs/thesaurus.md)") from None
        return cls.from_dict(data, source=path)

    def with_terms(self, names: Iterable[str]) -> "Thesaurus":
        """A copy in which every detector class name that is no entry yet becomes a term of its own
        (section `terms`): the automatic base of a detector's class names, added at run time. A
        name with commas lists aliases (the Visual Genome class file: "stop sign,stopsign"): the
        first is the term, the others its variants."""
        terms = {k: list(v) for k, v in self.sections["terms"].items()}
        known = set(self._canonical)
        for name in names:
            aliases = [a.strip() for a in str(name).split(",") if fold(a)]
            if not aliases or fold(aliases[0]) in known:
                continue
            fresh = [a for a in aliases[1:] if fold(a) not in known]
            terms[aliases[0]] = fresh
            known.update(fold(a) for a in [aliases[0]] + fresh)
        sections = dict(self.sections, terms=terms)
        return Thesaurus(sections, self.options, source=self.source, name=self.name, description=self.description)

    # -- lookup -----------------------------------------------------------------------------
    @property
    def terms(self) -> frozenset[str]:
        """Every canonical term."""
        return frozenset(self._canonical.values())

    def __contains__(self, word: str) -> bool:
        return self.normalise(word) is not None

    def __len__(self) -> int:
        return len(self.terms)

    def normalise(self, word: str) -> str | None:
        """The canonical term of a word or phrase (case, plural, synonym, abbreviation), or None."""
        return self._lookup(fold(word))

    def _lookup(self, key: str) -> str | None:
        """`normalise` of an already folded key."""
        if not key:
            return None
        found = self._canonical.get(key)
        if found is not None or not self.options["plurals"]:
            return found
        for candidate in inflections(key):
            found = self._canonical.get(candidate)
            if found is not None:
                return found
        return None

    def tag_terms(self, class_name: str) -> frozenset[str]:
        """The terms of a detector class name: the whole name's, and (multi-word names, with
        split_multiword_tags) each of its words' that is not a stopword. A name with commas
        lists aliases ("stop sign,stopsign"): the union of theirs."""
        cached = self._tag_cache.get(class_name)
        if cached is not None:
            return cached
        terms = set()
        for alias in str(class_name).split(","):
            whole = self.normalise(alias)
            if whole is not None:
                terms.add(whole)
            key = fold(alias)
            if self.options["split_multiword_tags"] and " " in key:
                for word in key.split(" "):
                    if _is_word(word) and word not in self.stopwords:
                        term = self.normalise(word)
                        if term is not None:
                            terms.add(term)
        result = frozenset(terms)
        self._tag_cache[class_name] = result
        return result

    def match_words(self, words: Sequence[str]) -> list[tuple[str, tuple[int, ...]]]:
        """(term, word indices) for a caption's words, left to right; at each word the longest
        run of words that normalises to a term wins and its words are not matched again."""
        keys = [fold(w) for w in words]
        matches: list[tuple[str, tuple[int, ...]]] = []
        start = 0
        while start < len(keys):
            if not keys[start]:
                start += 1
                continue
            matched = False
            for length in range(min(self.max_phrase_words, len(keys) - start), 0, -1):
                span = keys[start:start + length]
                if not all(span):
                    continue
                term = self._lookup(" ".join(span))
                if term is not None:
                    matches.append((term, tuple(range(start, start + length))))
                    start += length
                    matched = True
                    break
            if not matched:
                start += 1
        return matches

    # -- writing ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The thesaurus as a document of the file format."""
        data: dict[str, Any] = {"format": FORMAT, "version": VERSION}
        if self.name:
            data["name"] = self.name
        if self.description:
            data["description"] = self.description
        data["options"] = {**self.options, "stopwords": list(self.options["stopwords"])}
        for section in SECTIONS:
            data[section] = {k: list(v) for k, v in self.sections[section].items()}
        return data

    def __repr__(self) -> str:
        return f"Thesaurus({self.name or self.source!r}, {len(self)} terms)"

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_tag_cache"] = {}
        return state


def _kind(value: Any) -> str:
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
             float: "a number", type(None): "null"}
    return kinds.get(type(value), type(value).__name__)
