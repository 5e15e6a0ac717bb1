"""Component default configs, merged in one place, and the parameters a component accepts.

`component_config(component, node)` is a model's or dataset builder's DEFAULT_CONFIG with the
keys the runner reads from every such node under it and `node` merged over it, validated. The
loader builds its base from the same defaults and merges the layers with the same `merge_layers`.
"""

from __future__ import annotations

import importlib
import inspect
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from vlfw.config import schema
from vlfw.config.files import read_yaml
from vlfw.config.paths import Parts, child, find, has_path, node_at, split_pattern
from vlfw.errors import ConfigError


# -- which component a class is ------------------------------------------------------------------
def component_kind(component: Any) -> str | None:
    """'dataset', 'model' or None (another kind of component)."""
    from vlfw.datasets.base import DatasetBuilder
    from vlfw.models.base import BaseModel

    if inspect.isclass(component):
        if issubclass(component, DatasetBuilder):
            return "dataset"
        if issubclass(component, BaseModel):
            return "model"
    return None


def describe_component(component: Any) -> str:
    """"dataset 'vqa2' from <origin>" for a registered component, else its qualified name."""
    from vlfw.registry import ALL_REGISTRIES

    for registry in ALL_REGISTRIES.values():
        for entry in registry.entries():
            if entry.obj is component:
                return f"{registry.kind} {entry.name!r} from {entry.origin}"
    return f"{getattr(component, '__module__', '?')}.{getattr(component, '__qualname__', component)}"


def relative_components(kind: str | None) -> dict[str, schema.ComponentNode]:
    return {"dataset": schema.DATASET_COMPONENTS, "model": schema.MODEL_COMPONENTS}.get(kind or "", {})


# -- default configs ---------------------------------------------------------------------------
def component_defaults(component: Any) -> DictConfig:
    """A component's DEFAULT_CONFIG (a mapping, or a YAML path relative to its module) with the
    keys the runner reads from every node of its kind (datasets: losses, metrics, loss_weights;
    models: heads) under it."""
    default = getattr(component, "DEFAULT_CONFIG", None)
    if default is None:
        default = {}
    if isinstance(default, (str, os.PathLike)):
        module = importlib.import_module(component.__module__)
        path = Path(inspect.getfile(module)).parent / default
        try:
            node = read_yaml(path)
        except ConfigError as exc:
            raise ConfigError(f"the DEFAULT_CONFIG of {describe_component(component)} ({default!r}): {exc}") from None
    elif isinstance(default, (Mapping, DictConfig)):
        try:
            node = OmegaConf.create(default if isinstance(default, DictConfig) else dict(default))
        except OmegaConfBaseException as exc:
            raise ConfigError(f"the DEFAULT_CONFIG of {describe_component(component)} is not plain config data: "
                              f"{str(exc).splitlines()[0]}") from None
    else:
        raise ConfigError(f"the DEFAULT_CONFIG of {describe_component(component)} must be a mapping or a YAML path "
                          f"relative to its module, not {type(default).__name__}")
    runner_keys = {"dataset": schema.RUNNER_DATASET_KEYS, "model": schema.RUNNER_MODEL_KEYS}.get(
        component_kind(component) or "", {})
    return OmegaConf.merge(OmegaConf.create(runner_keys), node) if runner_keys else node


def _raw(node: Any, key: str) -> Any:
    value = child(node, key)
    return None if value is None else value._value()


def drop_switched_params(base: DictConfig, layer: DictConfig, patterns: Iterable[str]) -> None:
    """Where `layer` gives a single `{type, params}` node another `type` than `base` has, drop
    the params `base` holds for it: the new component does not inherit the old one's settings."""
    for pattern in patterns:
        for parts in find(layer, split_pattern(pattern)):
            new, old = node_at(layer, parts), node_at(base, parts)
            if not isinstance(new, DictConfig) or not isinstance(old, DictConfig) or "type" not in new:
                continue
            if _raw(new, "type") != _raw(old, "type") and "params" in old:
                old.params = {}


def single_node_patterns(components: Mapping[str, schema.ComponentNode]) -> list[str]:
    return [pattern for pattern, spec in components.items() if not spec.many]


def merge_layers(base: DictConfig, layers: Sequence[DictConfig], patterns: Iterable[str]) -> DictConfig:
    """OmegaConf merge of `layers` over `base` (lists replace, mappings merge), except that a
    layer changing a `{type, params}` node's type (at `patterns`) drops the lower params."""
    patterns = list(patterns)
    merged = OmegaConf.merge(base)  # a copy
    for layer in layers:
        drop_switched_params(merged, layer, patterns)
        merged = OmegaConf.merge(merged, layer)
    return merged


# -- constructor parameters ----------------------------------------------------------------------
def accepted_parameters(component: Any, framework_base: type | None) -> tuple[list[str], list[str]]:
    """(accepted, required) parameter names of `component`'s constructor.

    The named parameters of each `__init__` along the MRO, going up while an `__init__` takes
    `**params` (and so passes them on); the framework base class ends the walk: its catch-all
    `**params` accepts no arbitrary keys. `required`: the first `__init__`'s parameters without
    a default.
    """
    declared, required = parameter_declarations(component, framework_base)
    return list(declared), required


def parameter_declarations(component: Any, framework_base: type | None
                           ) -> tuple[dict[str, inspect.Parameter], list[str]]:
    """(name -> the inspect.Parameter that declares it, required names): the walk of
    `accepted_parameters`, keeping each parameter's default and annotation."""
    accepted: dict[str, inspect.Parameter] = {}
    required: list[str] = []

    def take(parameters: Iterable[inspect.Parameter], first: bool) -> bool:
        """Record the named parameters; True when they end in **params."""
        passes_on = False
        for parameter in parameters:
            if parameter.kind is inspect.Parameter.VAR_KEYWORD:
                passes_on = True
            elif parameter.kind is not inspect.Parameter.VAR_POSITIONAL and parameter.name not in accepted:
                accepted[parameter.name] = parameter
                if first and parameter.default is inspect.Parameter.empty:
                    required.append(parameter.name)
        return passes_on

    if not inspect.isclass(component):  # a factory function
        take(inspect.signature(component).parameters.values(), first=True)
        return accepted, required
    first = True
    for klass in component.__mro__:
        if klass is object or klass.__module__.split(".")[0] in ("torch", "builtins"):
            break
        init = klass.__dict__.get("__init__")
        if init is not None:
            try:
                parameters = list(inspect.signature(init).parameters.values())[1:]  # without self
            except (TypeError, ValueError):
                break
            passes_on = take(parameters, first)
            first = False
            if not passes_on:
                break
        if klass is framework_base:
            break
    return accepted, required


# -- the public entry point ------------------------------------------------------------------------
def component_config(component: Any, node: DictConfig | Mapping | None = None, path: str | None = None) -> DictConfig:
    """`component`'s DEFAULT_CONFIG (with the runner's keys) merged under `node`, validated.

    `path` (e.g. "dataset_config.vqa2") names the node in errors; by default the component's
    section and class name.
    """
    from vlfw.config.validation import validate_config

    kind = component_kind(component)
    defaults = component_defaults(component)
    given = None
    if node is not None:
        given = node if isinstance(node, DictConfig) else OmegaConf.create(dict(node))
    components = relative_components(kind)
    merged = merge_layers(defaults, [given] if given is not None else [], single_node_patterns(components))
    section = {"dataset": "dataset_config", "model": "model_config"}.get(kind or "")
    if section is None:
        return merged
    prefix = tuple(path.split(".")) if path else (section, getattr(component, "__name__", "component"))
    if len(prefix) != 2:
        raise ValueError(f"path must be '<section>.<name>', got {path!r}")
    if given is not None:  # a key the component does not declare is an error here too, not ignored
        from vlfw.config.validation import validate_keys

        choices = [".".join(prefix + (str(k),)) for k in (getattr(component, "CONFIG_CHOICES", None) or {})]
        validate_keys(given, defaults, "in the given config", prefix, allowed_values=choices)
    wrapper = OmegaConf.create({prefix[0]: {prefix[1]: merged}})

    def where(parts: Parts) -> str:
        if given is not None and parts[:2] == prefix and has_path(given, parts[2:]):
            return "in the given config"
        return f"in the default config of {describe_component(component)}"

    validate_config(wrapper, where, {prefix: component})
    return merged


def check_choices_declared(component: Any, defaults: DictConfig) -> dict[str, tuple]:
    """The component's CONFIG_CHOICES, each naming a key of its DEFAULT_CONFIG."""
    choices = getattr(component, "CONFIG_CHOICES", None) or {}
    if not isinstance(choices, Mapping):
        raise ConfigError(f"CONFIG_CHOICES of {describe_component(component)} must be a mapping "
                          f"{{'dotted.key': (allowed, ...)}}, not {type(choices).__name__}")
    for dotted, allowed in choices.items():
        if not has_path(defaults, str(dotted).split(".")):
            raise ConfigError(f"CONFIG_CHOICES of {describe_component(component)} names {dotted!r}, which is not "
                              "a key of its DEFAULT_CONFIG")
        if isinstance(allowed, (str, bytes)) or not isinstance(allowed, Iterable):
            raise ConfigError(f"CONFIG_CHOICES[{dotted!r}] of {describe_component(component)} must be a tuple of "
                              f"allowed values, not {allowed!r}")
    return {str(k): tuple(v) for k, v in choices.items()}

