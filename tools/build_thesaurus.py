"""Build the automatic base of a thesaurus (docs/thesaurus.md) from a detector's class names.

    python tools/build_thesaurus.py --classes objects_vocab.txt --vocab vocab.txt \
        --manual vg_manual.json --name visual_genome -o vlfw/data/thesauri/visual_genome.json

`--classes`: one class name per line (commas separate aliases, as in Visual Genome's
objects_vocab.txt: "stop sign,stopsign") or a JSON list of names. Each class becomes a term
under `terms`, its aliases its variants. `--vocab` (a BERT vocab.txt): the singular / plural
forms of each class that are whole tokens of the vocabulary are written as explicit variants,
and `meta` records how many classes can meet a caption word (the paper's anchor vocabulary)
and which cannot (the work list for manual entries). `--manual` files (the thesaurus format)
are merged in; their entries win over generated ones. The result is checked by loading it.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Sequence

from vlfw.errors import DataError
from vlfw.processors.anchors import read_class_names
from vlfw.processors.thesaurus import (
    DEFAULT_OPTIONS,
    FORMAT,
    SECTIONS,
    VERSION,
    Thesaurus,
    fold,
    plural_forms,
    singular_forms,
)

DEFAULT_BACKGROUND = ("__background__",)


def read_classes(path: str) -> list[list[str]]:
    """Each class as its list of aliases (first = the name), from a text or JSON class file."""
    lines = read_class_names(path)
    classes = []
    for line in lines:
        aliases = [a.strip() for a in line.split(",") if a.strip()]
        if aliases:
            classes.append(aliases)
    if not classes:
        raise DataError(f"{path}: the class file names no classes")
    return classes


def read_vocabulary(path: str) -> set[str]:
    """The folded whole-word tokens of a WordPiece vocab.txt (no ##pieces, no [special] tokens)."""
    try:
        with open(path, encoding="utf-8") as handle:
            tokens = [line.rstrip("\n") for line in handle]
    except OSError as error:
        raise DataError(f"{path}: cannot read the vocabulary ({error})") from None
    words = set()
    for token in tokens:
        if not token or token.startswith("##") or (token.startswith("[") and token.endswith("]")):
            continue
        key = fold(token)
        if key and " " not in key and any(c.isalnum() for c in key):
            words.add(key)
    if not words:
        raise DataError(f"{path}: the vocabulary holds no whole-word tokens")
    return words


def read_manual(path: str) -> dict[str, Any]:
    """A thesaurus file of manual entries, validated (it must load on its own)."""
    return Thesaurus.load(path).to_dict()


def in_vocabulary(phrase: str, vocabulary: set[str]) -> bool:
    """Whether every word of a phrase is a whole token (so a caption can hold it without pieces)."""
    words = [w for w in fold(phrase).split(" ") if any(c.isalnum() for c in w)]
    return bool(words) and all(w in vocabulary for w in words)


def inflected_variants(name: str, vocabulary: set[str]) -> list[str]:
    """Singular / plural forms of a class name (last word changed) whose words are all whole tokens."""
    head, _, last = fold(name).rpartition(" ")
    prefix = head + " " if head else ""
    return [prefix + form for form in singular_forms(last) + plural_forms(last)
            if in_vocabulary(prefix + form, vocabulary)]


def build(classes: Sequence[Sequence[str]], vocabulary: set[str] | None = None, manual: Sequence[dict] = (),
          background: Sequence[str] = DEFAULT_BACKGROUND, name: str = "", description: str = "",
          stopwords: Sequence[str] = (), split_multiword_tags: bool = True) -> dict[str, Any]:
    """The thesaurus document: generated terms, then the manual sections merged in."""
    skipped = {fold(b) for b in background}
    classes = [list(c) for c in classes if fold(c[0]) not in skipped]
    manual_keys: set[str] = set()
    for document in manual:
        for section in SECTIONS:
            for canonical, variants in document.get(section, {}).items():
                manual_keys.add(fold(canonical))
                manual_keys.update(fold(v) for v in variants)
    class_keys = {fold(a) for aliases in classes for a in aliases}

    terms: dict[str, list[str]] = {}
    generated: dict[str, list[str]] = {}  # folded inflected form -> the classes that produce it
    for aliases in classes:
        canonical = aliases[0].strip().lower()
        if canonical in terms:
            terms[canonical] += [a for a in aliases[1:] if a not in terms[canonical]]
            continue
        terms[canonical] = list(dict.fromkeys(a.strip().lower() for a in aliases[1:]))
        if vocabulary is not None:
            for form in inflected_variants(canonical, vocabulary):
                if form not in class_keys and form not in manual_keys:  # another class's name, or manual: theirs
                    generated.setdefault(form, []).append(canonical)
    ambiguous = {form: owners for form, owners in generated.items() if len(owners) > 1}
    for form, owners in generated.items():
        if len(owners) == 1 and form not in terms[owners[0]]:
            terms[owners[0]].append(form)

    sections: dict[str, dict[str, list[str]]] = {"terms": terms, "synonyms": {}, "abbreviations": {}}
    for document in manual:
        for section in SECTIONS:
            for canonical, variants in document.get(section, {}).items():
                merged = sections[section].setdefault(canonical, [])
                merged += [v for v in variants if v not in merged]

    meta: dict[str, Any] = {"classes": len(classes)}
    if vocabulary is not None:
        probe = Thesaurus(sections, {"split_multiword_tags": split_multiword_tags, "stopwords": list(stopwords)})
        keys_in_vocabulary = {key for key in probe._canonical if in_vocabulary(key, vocabulary)}
        terms_in_vocabulary = {probe._canonical[key] for key in keys_in_vocabulary}
        unmatched = [a[0] for a in classes if not (probe.tag_terms(",".join(a)) & terms_in_vocabulary)]
        meta.update({"vocabulary_words": len(vocabulary), "classes_meeting_a_vocabulary_word": len(classes) - len(unmatched),
                     "classes_without_a_vocabulary_word": unmatched})
    if ambiguous:
        meta["dropped_ambiguous_forms"] = {form: owners for form, owners in sorted(ambiguous.items())}

    document: dict[str, Any] = {"format": FORMAT, "version": VERSION}
    if name:
        document["name"] = name
    if description:
        document["description"] = description
    document["options"] = {**DEFAULT_OPTIONS, "split_multiword_tags": bool(split_multiword_tags),
                           "stopwords": list(stopwords)}
    document.update(sections)
    document["meta"] = meta
    return document


def dumps(document: dict[str, Any]) -> str:
    """JSON with one entry per line in the sections (a 1600-class file stays readable and diffable)."""
    lines = ["{"]
    items = list(document.items())
    for position, (key, value) in enumerate(items):
        comma = "," if position < len(items) - 1 else ""
        if key in SECTIONS and value:
            lines.append(f"  {json.dumps(key)}: {{")
            entries = list(value.items())
            for k, (canonical, variants) in enumerate(entries):
                lines.append(f"    {json.dumps(canonical, ensure_ascii=False)}: {json.dumps(variants, ensure_ascii=False)}"
                             + ("," if k < len(entries) - 1 else ""))
            lines.append("  }" + comma)
        else:
            lines.append(f"  {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}{comma}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", required=True, help="detector class file: one name per line, or a JSON list")
    parser.add_argument("--vocab", help="a BERT vocab.txt: add the plural/singular forms that are whole tokens")
    parser.add_argument("--manual", action="append", default=[], help="a thesaurus file of manual entries (repeatable)")
    parser.add_argument("--background", action="append", default=None,
                        help="a class name to leave out (repeatable; default __background__)")
    parser.add_argument("--stopwords", default="", help="comma-separated words of multi-word classes never used alone")
    parser.add_argument("--no-split", action="store_true", help="do not match the words of multi-word classes alone")
    parser.add_argument("--name", default="", help="the thesaurus name written into the file")
    parser.add_argument("--description", default="")
    parser.add_argument("-o", "--output", required=True, help="the thesaurus file to write")
    args = parser.parse_args(argv)
    try:
        classes = read_classes(args.classes)
        vocabulary = read_vocabulary(args.vocab) if args.vocab else None
        manual = [read_manual(path) for path in args.manual]
        document = build(classes, vocabulary, manual, background=args.background or DEFAULT_BACKGROUND,
                         name=args.name, description=args.description,
                         stopwords=[w.strip() for w in args.stopwords.split(",") if w.strip()],
                         split_multiword_tags=not args.no_split)
        Thesaurus.from_dict(json.loads(dumps(document)), source=args.output)  # what we write must load
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    try:
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.write(dumps(document))
    except OSError as error:
        print(f"error: cannot write {args.output} ({error})", file=sys.stderr)
        return 1
    meta = document["meta"]
    summary = f"{args.output}: {meta['classes']} classes"
    if "classes_meeting_a_vocabulary_word" in meta:
        summary += (f", {meta['classes_meeting_a_vocabulary_word']} meet a vocabulary word, "
                    f"{len(meta['classes_without_a_vocabulary_word'])} do not (listed in meta)")
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
