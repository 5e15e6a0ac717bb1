"""Entry-point plugin discovery and lazy loading.

Every component, the core's own included, is registered by importing a module named by an
entry point in the group ``vlfw.plugins``. Discovery only reads package metadata; the modules
are imported on the first registry lookup. A plugin that fails to import is recorded (entry
point, distribution, exception) and the others keep working, unless strict mode is on.
``VLFW_DISABLE_PLUGINS=a,b`` turns plugins off by entry-point name.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import threading
from dataclasses import dataclass
from importlib import metadata
from typing import Iterator

from vlfw.errors import PluginError

GROUP = "vlfw.plugins"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Origin:
    """Where a registered component came from."""

    module: str
    distribution: str | None = None
    version: str | None = None
    entry_point: str | None = None

    def __str__(self) -> str:
        if self.distribution:
            return f"{self.distribution} {self.version} (entry point {self.entry_point!r}, module {self.module})"
        return f"module {self.module} (not from a plugin)"


@dataclass(frozen=True)
class PluginInfo:
    name: str  # entry-point name
    module: str
    distribution: str
    version: str


@dataclass(frozen=True)
class PluginFailure:
    plugin: PluginInfo
    error: str

    def __str__(self) -> str:
        p = self.plugin
        return f"{p.name!r} from {p.distribution} {p.version} ({p.module}): {self.error}"


_lock = threading.RLock()
_loaded: dict[str, PluginInfo] = {}
_failed: dict[str, PluginFailure] = {}
_done = False
_loading = False
_strict = False
_current: PluginInfo | None = None


def configure(strict: bool | None = None) -> None:
    """Set strict mode (a failing plugin is an error) before the plugins load."""
    global _strict
    if strict is not None:
        _strict = bool(strict)
        if _strict and _failed:
            raise PluginError("plugin failed to load: " + "; ".join(str(f) for f in _failed.values()))


def disabled_plugins() -> set[str]:
    raw = os.environ.get("VLFW_DISABLE_PLUGINS", "")
    return {name.strip() for name in raw.split(",") if name.strip()}


def discover() -> list[PluginInfo]:
    """Installed plugins, from package metadata only (nothing is imported)."""
    found = []
    for ep in metadata.entry_points(group=GROUP):
        dist = getattr(ep, "dist", None)
        found.append(
            PluginInfo(
                name=ep.name,
                module=ep.value.split(":")[0],
                distribution=dist.metadata["Name"] if dist is not None else "unknown",
                version=dist.version if dist is not None else "unknown",
            )
        )
    # the core first, so that plugins may extend what it registers
    found.sort(key=lambda p: (p.name != "vlfw", p.name))
    return found


def current_origin(module: str) -> Origin:
    """The Origin for a registration happening now (inside a plugin import or not)."""
    if _current is not None:
        return Origin(module, _current.distribution, _current.version, _current.name)
    return Origin(module)


@contextlib.contextmanager
def _importing(plugin: PluginInfo) -> Iterator[None]:
    global _current
    previous, _current = _current, plugin
    try:
        yield
    finally:
        _current = previous


def load_plugins() -> None:
    """Import every enabled plugin once. Safe to call often; cheap after the first time."""
    global _done, _loading
    if _done or _loading:
        return
    with _lock:
        if _done or _loading:
            return
        _loading = True
        try:
            disabled = disabled_plugins()
            for plugin in discover():
                if plugin.name in disabled or plugin.name in _loaded:
                    continue
                before = _registered_names()
                try:
                    with _importing(plugin):
                        importlib.import_module(plugin.module)
                except Exception as exc:  # a broken plugin must not take the others down
                    _unregister_since(before)  # all or nothing: none of its components stay
                    failure = PluginFailure(plugin, f"{type(exc).__name__}: {exc}")
                    _failed[plugin.name] = failure
                    if _strict:
                        raise PluginError(f"plugin failed to load: {failure} (plugins.strict=true)") from exc
                    log.warning("plugin failed to load: %s", failure)
                else:
                    _loaded[plugin.name] = plugin
            _done = True
        finally:
            _loading = False


def _registered_names() -> dict[str, set[str]]:
    from vlfw.registry import ALL_REGISTRIES

    return {kind: registry.snapshot() for kind, registry in ALL_REGISTRIES.items()}


def _unregister_since(before: dict[str, set[str]]) -> None:
    from vlfw.registry import ALL_REGISTRIES

    for kind, registry in ALL_REGISTRIES.items():
        for name in registry.snapshot() - before.get(kind, set()):
            registry.remove(name)


def core_installed() -> bool:
    """Whether the core's own entry point (`vlfw = vlfw.components`) is installed."""
    return any(plugin.name == "vlfw" for plugin in discover())


def loaded_plugins() -> list[PluginInfo]:
    load_plugins()
    return list(_loaded.values())


def failed_plugins() -> list[PluginFailure]:
    return list(_failed.values())


def plugin_versions() -> dict[str, dict[str, str]]:
    """Loaded plugins and their versions, as recorded in every checkpoint."""
    return {
        p.name: {"distribution": p.distribution, "version": p.version, "module": p.module}
        for p in loaded_plugins()
    }


def _reset_for_tests() -> None:
    """Forget what was loaded (tests only)."""
    global _done
    _loaded.clear()
    _failed.clear()
    _done = False
