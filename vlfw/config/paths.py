"""Key paths in a config: ('dataset_config', 'vqa2', 'losses', 0) <-> dataset_config.vqa2.losses[0],
and patterns over them (`*` = any one key or list index)."""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Sequence

from omegaconf import DictConfig, ListConfig

Parts = tuple  # str keys and int list indices


def format_path(parts: Iterable[Any]) -> str:
    """('a', 'b', 0, 'c') -> 'a.b[0].c'."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def split_pattern(pattern: str) -> list[str]:
    return pattern.split(".")


def matches(parts: Sequence[Any], pattern: str) -> bool:
    pattern_parts = split_pattern(pattern)
    return len(parts) == len(pattern_parts) and all(p == "*" or p == str(k) for k, p in zip(parts, pattern_parts))


def child(node: Any, key: Any) -> Any:
    """The raw child node (interpolations unresolved), or None."""
    if isinstance(node, DictConfig):
        return node._get_node(key) if key in node else None
    if isinstance(node, ListConfig):
        return node._get_node(key) if isinstance(key, int) and 0 <= key < len(node) else None
    return None


def node_at(node: Any, parts: Sequence[Any]) -> Any:
    """The raw node at `parts`, or None."""
    for part in parts:
        node = child(node, part)
        if node is None:
            return None
    return node


def has_path(node: Any, parts: Sequence[Any]) -> bool:
    return node_at(node, parts) is not None


def value_at(node: Any, parts: Sequence[Any]) -> Any:
    """The (resolved) value at `parts`."""
    for part in parts:
        node = node[part]
    return node


def find(node: Any, pattern: Sequence[str], prefix: Parts = ()) -> Iterator[Parts]:
    """Key paths in `node` matching `pattern`."""
    if not pattern:
        yield prefix
        return
    head, rest = pattern[0], pattern[1:]
    if isinstance(node, DictConfig) and not node._is_missing() and not node._is_none():
        keys: list = [str(k) for k in node.keys()] if head == "*" else ([head] if head in node else [])
    elif isinstance(node, ListConfig) and not node._is_missing() and not node._is_none():
        keys = list(range(len(node))) if head == "*" else []
    else:
        return
    for key in keys:
        yield from find(child(node, key), rest, prefix + (key,))
