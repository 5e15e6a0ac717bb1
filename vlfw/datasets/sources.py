"""Data sources resolved before any builder is built: the Shapes worlds a run reads.

A run calls `prepare_sources(config)` once, before building its dataset builders: every Shapes
world named by a dataset with `source: shapes` is generated into $VLFW_CACHE (or found there).
Building a builder afterwards only locates its world, so it never generates, never takes the
generation lock and never draws from any random number generator.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

from vlfw.errors import DataError

log = logging.getLogger(__name__)


def _plain(node: Any) -> Any:
    if isinstance(node, DictConfig) or OmegaConf.is_list(node):
        return OmegaConf.to_container(node, resolve=True)
    return node


def _world_key(shapes: Mapping[str, Any] | None) -> tuple[str, int]:
    shapes = dict(shapes or {})
    return str(shapes.get("size", "tiny")), int(shapes.get("seed", 0))


def shapes_worlds(config: DictConfig | Mapping[str, Any]) -> dict[str, tuple[str, int]]:
    """dataset name -> (size, seed) of the Shapes world it reads, for the run's datasets with
    `source: shapes` (`datasets`, or every `dataset_config` entry when `datasets` is unset).
    A dataset node without `source`/`shapes` takes its builder's defaults."""
    config = _plain(config) or {}
    nodes: dict[str, Any] = dict(config.get("dataset_config") or {})
    names = [str(n) for n in (config.get("datasets") or nodes)]
    worlds: dict[str, tuple[str, int]] = {}
    for name in names:
        node = dict(nodes.get(name) or {})
        if "source" not in node or "shapes" not in node:
            node = {**_builder_defaults(name), **node}
        if str(node.get("source", "files")) == "shapes":
            worlds[name] = _world_key(node.get("shapes"))
    return worlds


def _builder_defaults(name: str) -> dict[str, Any]:
    from vlfw.config.loader import component_defaults
    from vlfw.registry import DATASETS

    if name not in DATASETS:
        return {}
    return _plain(component_defaults(DATASETS.get(name))) or {}


def prepare_sources(config: DictConfig | Mapping[str, Any], cache_dir: str | None = None) -> dict[str, str]:
    """Generate (first time) or locate every Shapes world the run's datasets read.

    Returns dataset name -> world root. Call once per process before building the builders (in
    a distributed run: on every rank; generation is locked and atomic, so one rank generates and
    the others wait for it). Global RNG states (python, numpy, torch) are left as they were.
    """
    from vlfw.world import ensure_world

    roots: dict[tuple[str, int], str] = {}
    out: dict[str, str] = {}
    for name, key in shapes_worlds(config).items():
        if key not in roots:
            roots[key] = ensure_world(size=key[0], seed=key[1], cache_dir=cache_dir)
        out[name] = roots[key]
    return out


def locate_shapes_world(dataset: str, shapes: Mapping[str, Any] | None) -> str:
    """The root of the already prepared Shapes world of a dataset; a clear error when missing."""
    try:
        from vlfw.world.cache import find_world, world_dir
    except ImportError as error:
        raise DataError(f"dataset {dataset!r}: source=shapes needs the Shapes world (vlfw.world): {error}") from None
    size, seed = _world_key(shapes)
    root = find_world(size, seed)
    if root is None:
        raise DataError(
            f"dataset {dataset!r}: the Shapes world (size {size}, seed {seed}) is not prepared in "
            f"{world_dir(size, seed)}; generate it first with `vlfw_prepare shapes --size {size} --seed {seed}` "
            "or vlfw.datasets.prepare_sources(config) (vlfw_run does this before building datasets)"
        )
    return root
