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

from vlfw.errors import RegistryError, did_you_mean

T = TypeVar("T")


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
        from vlfw import plugins

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
            raise RegistryError(
                f"duplicate {self.kind} name {name!r}: registered by {previous.origin} "
                f"and again by {origin}; rename one of them"
            )
        self._entries[name] = Entry(name, obj, origin)

    def remove(self, name: str) -> None:
        """Unregister `name` (used by tests that register temporary components)."""
        self._entries.pop(name, None)

    # -- lookup ---------------------------------------------------------------------------
    def _ensure_loaded(self) -> None:
        from vlfw import plugins

        plugins.load_plugins()

    def entry(self, name: str) -> Entry:
        self._ensure_loaded()
        try:
            return self._entries[name]
        except KeyError:
            pass
        from vlfw import plugins

        known = sorted(self._entries)
        message = f"unknown {self.kind} {name!r}.{did_you_mean(name, known)} Known: {', '.join(known) or 'none'}."
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
CALLBACKS: Registry = _LazyBaseRegistry("callback", ("vlfw.runner.callbacks", "Callback"))
HEADS: Registry = _LazyBaseRegistry("head", ("vlfw.modules.heads", "Head"))

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
}
