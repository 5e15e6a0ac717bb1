"""One typed registry per kind of component, filled by entry-point plugins.

    from vlfw.registry import MODELS
    @MODELS.register("my_model")
    class MyModel(BaseModel): ...

Looking a name up loads the plugins first (lazily, once), so a component registered by any
installed plugin is found without importing it by hand.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterator, TypeVar

from vlfw import plugins
from vlfw.errors import RegistryError, did_you_mean
from vlfw.plugins import Origin

T = TypeVar("T")

__all__ = ["Origin", "Entry", "Registry", "ALL_REGISTRIES", "MODELS", "DATASETS", "PROCESSORS", "ENCODERS",
           "LOSSES", "METRICS", "OPTIMIZERS", "SCHEDULERS", "ITERATION_STRATEGIES", "CALLBACKS", "HEADS", "TASKS"]


@dataclass(frozen=True)
class Entry:
    name: str
    obj: Any
    origin: Origin


class Registry(Generic[T]):
    """A name -> component table for one kind (models, datasets, ...)."""

    def __init__(self, kind: str, base: type | None = None) -> None:
        self.kind = kind
        self.base = base
        self._entries: dict[str, Entry] = {}
        self._conflicts: dict[str, tuple[Origin, Origin]] = {}  # names two packages registered

    # -- registration -------------------------------------------------------------------
    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering a class or factory under `name`."""
        if not isinstance(name, str) or not name:
            raise RegistryError(f"{self.kind} names must be non-empty strings, got {name!r}")

        def decorator(obj: T) -> T:
            self.add(name, obj)
            return obj

        return decorator

    def add(self, name: str, obj: Any) -> None:
        if self.base is not None:
            if not (inspect.isclass(obj) and issubclass(obj, self.base)):
                raise RegistryError(
                    f"cannot register {self.kind} {name!r}: {getattr(obj, '__qualname__', obj)!r} "
                    f"is not a subclass of {self.base.__module__}.{self.base.__qualname__}"
                )
        origin = plugins.current_origin(getattr(obj, "__module__", "?"))
        if name in self._entries:
            previous = self._entries[name]
            if previous.obj is obj:
                return
            if origin.entry_point is not None:
                # a plugin's import fails on this (and is reported); a run that names the
                # component must not go on silently with the first package's
                self._conflicts[name] = (previous.origin, origin)
            raise RegistryError(
                f"duplicate {self.kind} name {name!r}: registered by {previous.origin} "
                f"and again by {origin}; rename one of them"
            )
        self._entries[name] = Entry(name, obj, origin)

    def remove(self, name: str) -> None:
        """Unregister `name` (tests that register temporary components; a plugin that failed to load)."""
        self._entries.pop(name, None)
        self._conflicts.pop(name, None)

    def snapshot(self) -> set[str]:
        """The registered names (to undo what a failing plugin registered)."""
        return set(self._entries)

    # -- lookup ---------------------------------------------------------------------------
    def _ensure_loaded(self) -> None:
        plugins.load_plugins()

    def entry(self, name: str) -> Entry:
        self._ensure_loaded()
        if name in self._conflicts:
            first, second = self._conflicts[name]
            raise RegistryError(f"{self.kind} {name!r} is registered twice: by {first} and by {second}; uninstall "
                                "one of them or disable it with VLFW_DISABLE_PLUGINS=<entry point>")
        try:
            return self._entries[name]
        except KeyError:
            pass
        known = sorted(self._entries)
        message = f"unknown {self.kind} {name!r}.{did_you_mean(name, known)} Known: {', '.join(known) or 'none'}."
        if not plugins.core_installed():
            message += (" No 'vlfw' entry point is installed: vlfw itself is not installed in this environment "
                        "(run pip install -e . in the repository, or pip install -r requirements.txt).")
        failures = plugins.failed_plugins()
        if failures:
            message += " Plugins that failed to load: " + "; ".join(str(f) for f in failures) + "."
        raise RegistryError(message)

    def get(self, name: str) -> T:
        return self.entry(name).obj

    def origin(self, name: str) -> Origin:
        return self.entry(name).origin

    def __contains__(self, name: str) -> bool:
        self._ensure_loaded()
        return name in self._entries

    def names(self) -> list[str]:
        self._ensure_loaded()
        return sorted(self._entries)

    def entries(self) -> Iterator[Entry]:
        self._ensure_loaded()
        for name in sorted(self._entries):
            yield self._entries[name]

    def build(self, name: str, *args: Any, **kwargs: Any) -> T:
        """Instantiate the component registered as `name`."""
        return self.get(name)(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} entries)"


def _lazy_base(module: str, name: str) -> type:
    import importlib

    return getattr(importlib.import_module(module), name)


class _LazyBaseRegistry(Registry):
    """A registry whose base class lives in a module that imports torch; resolved on first use."""

    def __init__(self, kind: str, base_path: tuple[str, str]) -> None:
        super().__init__(kind, None)
        self._base_path = base_path

    def add(self, name: str, obj: Any) -> None:
        if self.base is None:
            self.base = _lazy_base(*self._base_path)
        super().add(name, obj)


MODELS: Registry = _LazyBaseRegistry("model", ("vlfw.models.base", "BaseModel"))
DATASETS: Registry = _LazyBaseRegistry("dataset", ("vlfw.datasets.base", "DatasetBuilder"))
PROCESSORS: Registry = _LazyBaseRegistry("processor", ("vlfw.processors.base", "Processor"))
ENCODERS: Registry = _LazyBaseRegistry("encoder", ("torch.nn", "Module"))
LOSSES: Registry = _LazyBaseRegistry("loss", ("vlfw.losses.base", "Loss"))
METRICS: Registry = _LazyBaseRegistry("metric", ("vlfw.metrics.base", "Metric"))
OPTIMIZERS: Registry = Registry("optimizer")
SCHEDULERS: Registry = Registry("scheduler")
ITERATION_STRATEGIES: Registry = _LazyBaseRegistry(
    "iteration strategy", ("vlfw.data.multitask", "IterationStrategy")
)
CALLBACKS: Registry = _LazyBaseRegistry("callback", ("vlfw.runner.hooks", "Hook"))
HEADS: Registry = _LazyBaseRegistry("head", ("vlfw.modules.heads", "Head"))
TASKS: Registry = _LazyBaseRegistry("task", ("vlfw.tasks", "Task"))

ALL_REGISTRIES: dict[str, Registry] = {
    "models": MODELS,
    "datasets": DATASETS,
    "processors": PROCESSORS,
    "encoders": ENCODERS,
    "losses": LOSSES,
    "metrics": METRICS,
    "optimizers": OPTIMIZERS,
    "schedulers": SCHEDULERS,
    "iteration_strategies": ITERATION_STRATEGIES,
    "callbacks": CALLBACKS,
    "heads": HEADS,
    "tasks": TASKS,
}
