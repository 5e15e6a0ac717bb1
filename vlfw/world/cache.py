"""The on-disk cache of generated worlds: atomic, locked, with a manifest."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from contextlib import contextmanager
from typing import Iterator

from vlfw.cache import cache_dir as vlfw_cache_dir
from vlfw.world.generate import check_options, generate_world, resolve_size

GENERATOR_VERSION = "3"
MANIFEST = "MANIFEST.json"
TEMP_PREFIX = ".tmp-"


def world_dir(size: str, seed: int, cache_dir: str | None = None) -> str:
    return os.path.join(cache_dir or vlfw_cache_dir(), "shapes", f"{size}_seed{seed}")


@contextmanager
def _locked(path: str) -> Iterator[None]:
    """An exclusive fcntl lock on `path`, held while generating (blocks other processes)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def is_complete(root: str) -> bool:
    return os.path.isfile(os.path.join(root, MANIFEST))


def _file_listing(root: str) -> dict:
    """Per top-level folder: number of files and bytes; sha256 of every annotation file."""
    folders: dict[str, dict] = {}
    checksums: dict[str, str] = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            top = rel.split(os.sep)[0] if os.sep in rel else "."
            entry = folders.setdefault(top, {"files": 0, "bytes": 0})
            entry["files"] += 1
            entry["bytes"] += os.path.getsize(path)
            if name.endswith((".json", ".jsonl", ".p", ".tsv", ".txt", ".xml")) and not rel.startswith("features"):
                with open(path, "rb") as f:
                    checksums[rel.replace(os.sep, "/")] = hashlib.sha256(f.read()).hexdigest()
    return {"folders": dict(sorted(folders.items())), "annotation_sha256": dict(sorted(checksums.items()))}


log = logging.getLogger(__name__)


@contextmanager
def preserved_global_rng():
    """Leave python's, numpy's and torch's global RNG states as they were: generating the world
    on first use must not change what a run that asked for it draws afterwards."""
    import random

    import numpy as np
    import torch

    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def build_world(final: str, size: str, seed: int, **options) -> dict:
    """Generates into a temporary sibling of `final`, writes the manifest, renames into place."""
    parent = os.path.dirname(final)
    os.makedirs(parent, exist_ok=True)
    temp = os.path.join(parent, f"{TEMP_PREFIX}{os.path.basename(final)}-{os.getpid()}")
    shutil.rmtree(temp, ignore_errors=True)
    start = time.perf_counter()
    try:
        with preserved_global_rng():
            report = generate_world(temp, size, seed, **options)
        manifest = {"size": size, "seed": seed, "generator_version": GENERATOR_VERSION,
                    "options": report["options"], "counts": report["counts"],
                    "timings": {**report["timings"], "total": round(time.perf_counter() - start, 3)},
                    "files": _file_listing(temp)}
        with open(os.path.join(temp, MANIFEST), "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1, sort_keys=True)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.rename(temp, final)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return manifest


def _clean_leftovers(parent: str, name: str) -> None:
    """Removes temp dirs of killed generations (safe: called with the lock held)."""
    if not os.path.isdir(parent):
        return
    for entry in os.listdir(parent):
        if entry.startswith(f"{TEMP_PREFIX}{name}-"):
            shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)


def ensure_world(size: str = "tiny", seed: int = 0, cache_dir: str | None = None, force: bool = False,
                 **options) -> str:
    """The root of the Shapes world of `size` and `seed`, generated first if it is not cached."""
    resolve_size(size)
    check_options(options)  # before anything is locked or written
    final = world_dir(size, seed, cache_dir)
    if not force and not options and _manifest_matches(final):
        return final
    parent = os.path.dirname(final)
    with _locked(os.path.join(parent, f".{os.path.basename(final)}.lock")):
        if not force and not options and _manifest_matches(final):  # another process made it meanwhile
            return final
        _clean_leftovers(parent, os.path.basename(final))
        log.info("generating the Shapes world (size %s, seed %d) into %s; done once, then cached",
                 size, seed, final)
        manifest = build_world(final, size, seed, **options)
        log.info("Shapes world ready in %.0f s", manifest["timings"]["total"])
    return final


def find_world(size: str = "tiny", seed: int = 0, cache_dir: str | None = None) -> str | None:
    """The root of the cached Shapes world of `size` and `seed`, or None when it is not there
    (complete, of this generator version). Never generates."""
    resolve_size(size)
    final = world_dir(size, seed, cache_dir)
    return final if _manifest_matches(final) else None


def _manifest_matches(root: str) -> bool:
    if not is_complete(root):
        return False
    try:
        with open(os.path.join(root, MANIFEST), encoding="utf-8") as f:
            return json.load(f).get("generator_version") == GENERATOR_VERSION
    except (OSError, ValueError):
        return False


def read_manifest(root: str) -> dict:
    with open(os.path.join(root, MANIFEST), encoding="utf-8") as f:
        return json.load(f)
