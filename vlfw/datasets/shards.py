"""Webdataset tar shards (the img2dataset layout) as a source of image-text pre-training data.

A shard holds, per sample, members `{key}.jpg` (or .jpeg/.png/.webp), `{key}.txt` (the caption)
and `{key}.json` (metadata, img2dataset's fields: width, height, url, ...), and for region
features `{key}.npy` ((N, D) features), `{key}.boxes.npy` ((N, 4) xyxy pixels, the image size from
the json's width/height) and optionally `{key}.cls_prob.npy` ((N, C) detector class scores).

Reading is in two steps. At build time every shard's tar headers are scanned (no member data is
read): the samples it holds, which of them lack a member (bad records, dropped at build time) and
whether it is truncated. That index fixes the number of samples and each sample's `index` (its
position in shard order, the same position the map-style reader gives it when the shards were
written from the map-style records). At load time each (rank, loader worker) stream reads its own
shards with webdataset's tar iterators, through a seeded shuffle buffer, and yields exactly the
same number of samples per epoch as every other stream (see docs/datasets.md, "Sharded
(webdataset) sources"), so ranks stay in step and a position can be resumed by replaying the
stream without decoding.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import logging
import os
import tarfile
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
from webdataset.shardlists import expand_urls
from webdataset.tariterators import base_plus_ext, group_by_keys, tar_file_expander

from vlfw.data.streaming import STREAM_POSITION  # noqa: F401  (re-exported for the shard stream)
from vlfw.datasets.readers import _regions, check_regions
from vlfw.datasets.records import BadRecordCounter, BadRecordError, path_manager
from vlfw.errors import ConfigError, DataError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = ("jpg", "jpeg", "png", "webp")
REGION_SUFFIXES = ("npy", "boxes.npy", "json")


# -- shard specs ----------------------------------------------------------------------------------


def expand_shards(spec: Any, where: str) -> list[str]:
    """The shard files of a spec: a brace pattern (`/data/cc3m/{00000..00331}.tar`), a folder
    (every .tar in it, sorted), or a list of either. `pipe:` specs are refused: vlfw never runs
    a command named by a config."""
    specs = [spec] if isinstance(spec, str) else list(spec or [])
    if not specs or not all(isinstance(s, str) and s for s in specs):
        raise ConfigError(f"{where} must be a shard path, a brace pattern such as /data/cc3m/{{00000..00331}}.tar, "
                          f"a folder of .tar shards, or a list of them; got {spec!r}")
    paths: list[str] = []
    for item in specs:
        if item.startswith("pipe:"):
            raise ConfigError(f"{where}: {item!r} is a pipe: spec; vlfw does not run commands to read data, "
                              "give the shard files (local paths or URLs iopath can open)")
        item = os.path.expanduser(item)
        if path_manager.isdir(item):
            found = sorted(n for n in path_manager.ls(item) if n.endswith((".tar", ".tar.gz", ".tgz")))
            if not found:
                raise DataError(f"{where}: the folder {item} holds no .tar shards")
            paths.extend(os.path.join(item, n) for n in found)
        else:
            paths.extend(expand_urls(item))
    return paths


# -- the index of the shards (built at build time from the tar headers) ---------------------------


@dataclass(frozen=True)
class ShardInfo:
    path: str
    count: int  # samples with every required member
    bad_keys: frozenset  # keys of samples dropped at build time (a member missing or cut off)


@dataclass(frozen=True)
class ShardIndex:
    shards: tuple[ShardInfo, ...]
    required: tuple[str, ...]  # the member suffixes every sample needs ("image" = any image suffix)

    @property
    def offsets(self) -> list[int]:
        return [0] + list(itertools.accumulate(s.count for s in self.shards))[:-1]

    @property
    def total(self) -> int:
        return sum(s.count for s in self.shards)


def required_suffixes(visual: str) -> tuple[str, ...]:
    return ("txt", "image") if visual == "images" else ("txt",) + REGION_SUFFIXES


def _missing(suffixes: set[str], required: Sequence[str]) -> list[str]:
    missing = []
    for suffix in required:
        if suffix == "image":
            if not suffixes.intersection(IMAGE_SUFFIXES):
                missing.append("image (." + "/.".join(IMAGE_SUFFIXES) + ")")
        elif suffix not in suffixes:
            missing.append(f".{suffix}")
    return missing


def _open_shard(path: str):
    try:
        return path_manager.open(path, "rb")
    except FileNotFoundError:
        raise DataError(f"{path}: shard not found") from None
    except OSError as error:
        raise DataError(f"{path}: cannot open the shard ({error})") from None


SCAN_VERSION = "1"


def _scan(path: str, required: Sequence[str]) -> tuple[int, list[str], list[tuple[str, str]]]:
    """(samples kept, keys dropped, [(record, reason)] of the bad records) of one shard, from its
    tar headers (no member data is read)."""
    handle = _open_shard(path)
    keys: dict[str, set[str]] = {}
    truncated = None
    with handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(0)
        try:
            archive = tarfile.open(fileobj=handle, mode="r:*")
        except tarfile.TarError as error:
            raise DataError(f"{path}: cannot open the shard: not a readable tar archive ({error}); "
                            "download it again or remove it from the shard list") from None
        try:
            for member in archive:
                if not member.isreg():
                    continue
                key, suffix = base_plus_ext(member.name)
                if key is None or os.path.basename(member.name).startswith("__"):
                    continue
                if member.offset_data + member.size > size:
                    keys.setdefault(key, set())
                    truncated = member.name
                    break
                keys.setdefault(key, set()).add(suffix.lower())
            else:
                # tarfile ends quietly on a header cut short: a complete archive ends with two zero blocks
                if size < archive.offset + 2 * tarfile.BLOCKSIZE:
                    truncated = f"at byte {size} (the archive has no end marker)"
        except (tarfile.TarError, EOFError, OSError) as error:
            truncated = f"after {len(keys)} samples ({error})"
        finally:
            archive.members = []
    dropped: list[str] = []
    problems: list[tuple[str, str]] = []
    if truncated is not None:
        # the sample being read when the archive ended may have lost members: it is dropped too
        if keys:
            dropped.append(next(reversed(keys)))
        problems.append((f"member {truncated}", "truncated tar shard (the sample there and all after it are "
                         "lost; download the shard again)"))
    for key, suffixes in keys.items():
        missing = _missing(suffixes, required) if key not in dropped else []
        if missing:
            dropped.append(key)
            problems.append((f"sample {key}", f"no {', '.join(missing)} member"))
    return len(keys) - len(dropped), dropped, problems


def _scan_cache_path(path: str, required: Sequence[str]) -> str | None:
    """Where the scan of a local shard is cached (keyed by its path, size and mtime), else None."""
    from vlfw.cache import cache_dir

    try:
        stat = os.stat(path)
    except OSError:
        return None  # not a local file (a URL iopath opens): scanned every time
    payload = json.dumps([SCAN_VERSION, os.path.abspath(path), stat.st_size, stat.st_mtime_ns, list(required)])
    return os.path.join(cache_dir(), "shard_index", hashlib.sha256(payload.encode()).hexdigest()[:24] + ".json")


def scan_shard(path: str, required: Sequence[str], bad: BadRecordCounter) -> ShardInfo:
    """The samples of one shard from its tar headers (cached for local files); incomplete samples
    and a truncated end go through `bad` (an error unless skip_bad_records)."""
    cache_path = _scan_cache_path(path, required)
    scanned = None
    if cache_path is not None and os.path.isfile(cache_path):
        try:
            with open(cache_path, encoding="utf-8") as handle:
                data = json.load(handle)
            scanned = int(data["count"]), [str(k) for k in data["dropped"]], [tuple(p) for p in data["problems"]]
        except (OSError, ValueError, KeyError, TypeError):
            scanned = None  # a damaged cache entry: scanned again (and rewritten)
    if scanned is None:
        scanned = _scan(path, required)
        if cache_path is not None:
            from vlfw.runner.checkpoint import atomic_write_text

            try:
                atomic_write_text(cache_path, json.dumps({"path": path, "count": scanned[0], "dropped": scanned[1],
                                                          "problems": scanned[2]}))
            except Exception as error:  # noqa: BLE001  (a read-only cache only costs the scan next time)
                log.warning("could not cache the scan of %s at %s: %s", path, cache_path, error)
    count, dropped, problems = scanned
    for record, reason in problems:
        bad.handle(BadRecordError(path, record, reason))
    return ShardInfo(path, count, frozenset(dropped))


def build_shard_index(paths: Sequence[str], visual: str, bad: BadRecordCounter) -> ShardIndex:
    required = required_suffixes(visual)
    return ShardIndex(tuple(scan_shard(p, required, bad) for p in paths), required)


def iter_shard(index: ShardIndex, number: int) -> Iterator[dict]:
    """The raw samples (member suffix -> bytes, plus `__key__`, `__index__`, `__url__`) of shard
    `number` that the index counts, in tar order, read by webdataset's tar iterators."""
    info = index.shards[number]
    if info.count == 0:
        return
    offset = index.offsets[number]
    handle = _open_shard(info.path)
    seen = 0
    with handle:
        # a truncated tar stops its shard; the index already dropped (and counted) what is lost
        files = tar_file_expander([{"url": info.path, "stream": handle}], handler=_stop,
                                  select_files=lambda name: _wanted(name, index.required))
        for sample in group_by_keys(files, handler=_stop):
            if sample["__key__"] in info.bad_keys or _missing(set(sample), index.required):
                continue
            sample["__index__"] = offset + seen
            yield sample
            seen += 1
            if seen == info.count:
                return


def _wanted(name: str, required: Sequence[str]) -> bool:
    """Whether a member's data is read: the other modality's members (an image when reading
    regions, features when reading images) are skipped over unread."""
    suffix = (base_plus_ext(name)[1] or "").lower()
    if suffix in IMAGE_SUFFIXES:
        return "image" in required
    if suffix in ("npy", "boxes.npy", "cls_prob.npy"):
        return "npy" in required
    return True


def _stop(error: Exception) -> bool:
    return False


# -- one raw sample -> a record of the mapper ------------------------------------------------------


def shard_record(raw: dict, split: str) -> dict:
    """The mapper's record of a raw sample: caption, id (the key, as an int when it is digits, as
    img2dataset writes it), the image bytes or the region arrays' bytes."""
    path, key = str(raw.get("__url__", "")), raw["__key__"]
    try:
        caption = raw["txt"].decode("utf-8").strip()
    except UnicodeDecodeError:
        raise BadRecordError(path, f"sample {key}", "the .txt caption is not UTF-8 text") from None
    if not caption:
        raise BadRecordError(path, f"sample {key}", "empty caption")
    name = os.path.basename(key)
    record = {"row": int(name) if name.isdigit() else key, "caption": caption, "native": split, "key": key,
              "shard": path, "index": raw["__index__"]}
    image_suffix = next((s for s in IMAGE_SUFFIXES if s in raw), None)
    if image_suffix is not None:
        record["image"], record["image_member"] = raw[image_suffix], f"{key}.{image_suffix}"
    for suffix in ("npy", "boxes.npy", "cls_prob.npy", "json"):
        if suffix in raw:
            record[suffix] = raw[suffix]
    return record


def _load_array(data: bytes, path: str, where: str, member: str) -> np.ndarray:
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as error:  # noqa: BLE001  (truncated, not npy, an object array)
        raise BadRecordError(path, where, f"cannot load the {member} member ({error})", kind="features") from None


def shard_regions(record: dict, max_regions: int) -> dict[str, torch.Tensor]:
    """The region fields of a record (as vlfw.datasets.readers returns them), validated the same way."""
    path, where = record["shard"], f"sample {record['key']}"
    features = _load_array(record["npy"], path, where, ".npy")
    boxes = _load_array(record["boxes.npy"], path, where, ".boxes.npy")
    try:
        meta = json.loads(record["json"].decode("utf-8"))
        width, height = float(meta["width"]), float(meta["height"])
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
        raise BadRecordError(path, where, f"the .json member needs numeric width and height ({error})",
                             kind="features") from None
    if features.ndim != 2 or not np.issubdtype(features.dtype, np.number):
        raise BadRecordError(path, where, f"features have shape {features.shape}, expected (N, D)", kind="features")
    if boxes.shape != (len(features), 4):
        raise BadRecordError(path, where, f"boxes have shape {boxes.shape}, expected ({len(features)}, 4)",
                             kind="features")
    class_probs = None
    if "cls_prob.npy" in record:
        class_probs = _load_array(record["cls_prob.npy"], path, where, ".cls_prob.npy")
        if class_probs.ndim != 2 or len(class_probs) != len(features):
            raise BadRecordError(path, where, f"cls_prob has shape {class_probs.shape}, expected "
                                 f"({len(features)}, C)", kind="features")
    features, boxes = np.asarray(features, dtype=np.float32), np.asarray(boxes, dtype=np.float32)
    problem = check_regions(boxes, features, width, height)
    if problem:
        raise BadRecordError(path, where, problem, kind="features")
    return _regions(features, boxes, width, height, max_regions, class_probs)


def read_records(index: ShardIndex, split: str, bad: BadRecordCounter) -> list[dict]:
    """Every record of the shards in shard order (the whole split in memory: val/test splits)."""
    records = []
    for number in range(len(index.shards)):
        for raw in iter_shard(index, number):
            try:
                records.append(shard_record(raw, split))
            except BadRecordError as error:
                bad.handle(error)
    return records


class ShardFeatureInfo:
    """What task_info asks a feature reader (feature size, detector classes), from the first sample."""

    def __init__(self, index: ShardIndex) -> None:
        self.index = index
        self._first: dict | None = None

    def first(self) -> dict | None:
        if self._first is None:
            for number in range(len(self.index.shards)):
                for raw in iter_shard(self.index, number):
                    self._first = shard_record(raw, "train")
                    return self._first
        return self._first

    def feature_size(self) -> int | None:
        first = self.first()
        return None if first is None else int(shard_regions(first, 0)["region_features"].shape[-1])

    def num_classes(self) -> int | None:
        first = self.first()
        if first is None or "cls_prob.npy" not in first:
            return None
        return int(shard_regions(first, 0)["region_class_probs"].shape[-1])


# -- writing shards -------------------------------------------------------------------------------


def write_shards(samples: Iterable[dict], out_dir: str, samples_per_shard: int) -> list[tuple[str, int]]:
    """Write samples ({"__key__": key, suffix: bytes | str}) as `out_dir/{00000..}.tar`, each shard
    under a temporary name first and renamed when complete. Returns (path, samples) per shard."""
    from webdataset.writer import TarWriter

    if samples_per_shard < 1:
        raise ConfigError(f"--samples-per-shard must be >= 1, got {samples_per_shard}")
    os.makedirs(out_dir, exist_ok=True)
    written: list[tuple[str, int]] = []
    iterator = iter(samples)
    while True:
        batch = list(itertools.islice(iterator, samples_per_shard))
        if not batch:
            break
        final = os.path.join(out_dir, f"{len(written):05d}.tar")
        temporary = f"{final}.tmp-{os.getpid()}"
        try:
            with open(temporary, "wb") as handle:
                with TarWriter(handle, encoder=False, mtime=0.0) as writer:
                    for sample in batch:
                        writer.write({k: (v.encode("utf-8") if isinstance(v, str) and k != "__key__" else v)
                                      for k, v in sample.items()})
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, final)
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)
        written.append((final, len(batch)))
    return written


def brace_spec(paths: Sequence[str]) -> str:
    """`dir/{00000..00003}.tar` for the shards write_shards wrote (one path when there is one)."""
    if len(paths) == 1:
        return paths[0]
    folder = os.path.dirname(paths[0])
    return os.path.join(folder, f"{{00000..{len(paths) - 1:05d}}}.tar")
