"""The bottom of the data path: file access, parsed records and the bad-record bookkeeping.

Imported by the readers, the builders and the CLI alike; it imports nothing else of
`vlfw.datasets`, so none of them import each other in a cycle.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Iterable, Iterator

import torch
from iopath.common.file_io import PathManager

from vlfw.errors import DataError

log = logging.getLogger(__name__)

path_manager = PathManager()

__all__ = ["path_manager", "BadRecordError", "BadRecordCounter", "LOAD_KINDS", "Records", "read_json",
           "read_json_list", "json_kind", "iter_json_lines", "require_files", "join", "stable_seed"]


class BadRecordError(DataError):
    """One bad record: names the file and the record (line number or id) and why."""

    def __init__(self, file: str, record: str, reason: str, kind: str = "record") -> None:
        self.file = str(file)
        self.record = str(record)
        self.reason = reason
        self.kind = kind  # record | image | features
        super().__init__(
            f"{self.file}: bad {kind} at {self.record}: {reason} "
            "(fix or remove it, or set skip_bad_records=true to count and skip such records)"
        )

    def __reduce__(self):  # raised in DataLoader workers: must pickle with its fields
        return (type(self), (self.file, self.record, self.reason, self.kind))


LOAD_KINDS = ("record", "image", "features")


class BadRecordCounter:
    """Build-time skips (this process) and load-time skips (shared across loader workers).

    `skip=False`: `handle` raises the error. `skip=True`: it is counted and logged at debug
    level; the totals are logged once per build and at the end of each epoch.
    """

    def __init__(self, skip: bool, what: str) -> None:
        self.skip = bool(skip)
        self.what = what
        self.build_counts: dict[str, int] = {}
        self.examples: dict[str, str] = {}
        # shared memory: increments made in DataLoader worker processes are seen here
        self._load_counts = torch.zeros(len(LOAD_KINDS), dtype=torch.int64).share_memory_()

    def handle(self, error: BadRecordError) -> None:
        """At build time: raise, or count the record as skipped."""
        if not self.skip:
            raise error
        key = f"{error.kind}: {error.reason}"
        self.build_counts[key] = self.build_counts.get(key, 0) + 1
        self.examples.setdefault(key, f"{error.file} at {error.record}")
        log.debug("skipped %s", error)

    def drop(self, reason: str, count: int = 1) -> None:
        """Count records dropped by policy (not errors), e.g. VQA questions without a target."""
        if count:
            self.build_counts[reason] = self.build_counts.get(reason, 0) + count

    def count_load(self, error: BadRecordError) -> None:
        kind = error.kind if error.kind in LOAD_KINDS else "record"
        self._load_counts[LOAD_KINDS.index(kind)] += 1
        log.warning("skipped (%s) %s", self.what, error)

    def report_build(self) -> None:
        if self.build_counts:
            parts = [f"{n} x {reason}" + (f" (e.g. {self.examples[reason]})" if reason in self.examples else "")
                     for reason, n in self.build_counts.items()]
            log.warning("%s: dropped %d records at build time: %s", self.what, sum(self.build_counts.values()), "; ".join(parts))

    def load_counts(self) -> dict[str, int]:
        return {kind: int(n) for kind, n in zip(LOAD_KINDS, self._load_counts.tolist()) if n}

    def reset_load(self) -> None:
        self._load_counts.zero_()

    def report(self) -> dict[str, dict[str, int]]:
        return {"build": dict(self.build_counts), "load": self.load_counts()}


class Records(list):
    """The parsed records of one split (plain data, in order) and the counter of the bad ones.

    What `DatasetBuilder.records(split)` returns: a list, plus `.bad` (a BadRecordCounter whose
    build-time counts say what was dropped while parsing) and `.split`.
    """

    def __init__(self, items: Iterable[Any] = (), bad: BadRecordCounter | None = None, split: str = "") -> None:
        super().__init__(items)
        self.bad = bad if bad is not None else BadRecordCounter(False, split)
        self.split = split

    def __reduce__(self):
        return (type(self), (list(self), self.bad, self.split))


# -- JSON helpers -------------------------------------------------------------------------------


def read_json(path: str) -> Any:
    """A whole JSON document; a file that does not parse is an error (it is not a record)."""
    try:
        with path_manager.open(path, "r", encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except json.JSONDecodeError as error:
        raise DataError(
            f"{path}: not valid JSON at line {error.lineno} column {error.colno} ({error.msg}); "
            "the file is truncated or corrupt: download it again"
        ) from None


def json_kind(value: Any) -> str:
    """'an object', 'a list', ...: what a JSON value is, for error messages."""
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
             float: "a number", type(None): "null"}
    return kinds.get(type(value), type(value).__name__)


def read_json_list(path: str, key: str, data: Any = None) -> list:
    """The list under the top-level `key` of a JSON file holding an object (COCO-style
    annotation files); a file of another shape is one DataError naming it. `data`: the file's
    already parsed content (to take several lists from one file without parsing it again)."""
    if data is None:
        data = read_json(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object with a top-level {key!r} list, but the file holds "
                        f"{json_kind(data)}: is it the right file?")
    if not isinstance(data.get(key), list):
        found = f"{key!r} is {json_kind(data[key])}" if key in data else f"it has no {key!r} key"
        raise DataError(f"{path}: expected a top-level {key!r} list, but {found}: is it the right file?")
    return data[key]


def iter_json_lines(path: str, bad: BadRecordCounter) -> Iterator[tuple[int, dict]]:
    """(1-based line number, record) of a JSON-lines file; unparsable lines go through `bad`."""
    try:
        handle = path_manager.open(path, "r", encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    with handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                bad.handle(BadRecordError(path, f"line {number}", f"not valid JSON ({error.msg})"))
                continue
            if not isinstance(record, dict):
                bad.handle(BadRecordError(path, f"line {number}", "a record must be a JSON object"))
                continue
            yield number, record


# -- paths --------------------------------------------------------------------------------------


def join(*parts: str) -> str:
    return os.path.join(*parts)


def require_files(dataset: str, expected: dict[str, str], hint: str = "") -> None:
    """Raise one DataError listing every expected file (description -> path) that is missing."""
    missing = [(what, path) for what, path in expected.items() if not path_manager.exists(path)]
    if missing:
        listing = "; ".join(f"{what}: {path}" for what, path in missing)
        raise DataError(f"{dataset}: {len(missing)} expected file(s) missing: {listing}.{(' ' + hint) if hint else ''}")


def stable_seed(*numbers: int) -> int:
    """A 63-bit seed mixing several integers (SplitMix64 style) - no Python hash() randomness."""
    state = 0x9E3779B97F4A7C15
    for number in numbers:
        state ^= (int(number) + 0x9E3779B97F4A7C15 + (state << 6) + (state >> 2)) & 0xFFFFFFFFFFFFFFFF
        state = (state * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        state ^= state >> 31
    return state & 0x7FFFFFFFFFFFFFFF
