"""Layered configuration: package defaults <- component defaults <- includes <- project file <- CLI.

Every key a user sets must exist in the defaults (the package's or the selected components'),
so a typo is an error with close-match suggestions instead of a setting that silently does
nothing. A mapping whose default is empty (``{}``) is open: it takes any keys. The merged
config is then checked against the rules of `vlfw.config.schema` (allowed values, numeric
ranges, `{type, params}` component nodes and their parameters) by `vlfw.config.validation`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from vlfw.config import schema
from vlfw.config.components import (
    check_choices_declared,
    component_config,
    component_defaults,
    describe_component,
    merge_layers,
    single_node_patterns,
)
from vlfw.config.files import read_yaml, yaml_problem
from vlfw.config.paths import has_path
from vlfw.config.validation import validate_config, validate_keys, validate_run
from vlfw.errors import ConfigError, RegistryError

__all__ = ["load_config", "load_project_file", "save_config", "parse_cli", "build_base", "component_defaults",
           "validate_keys", "DEFAULTS_PATH"]

DEFAULTS_PATH = Path(__file__).with_name("defaults.yaml")
# keys whose value may be given on the command line as a comma-separated list
LIST_KEYS = {"datasets"}


# -- reading files ---------------------------------------------------------------------------
def load_project_file(path: str | os.PathLike, _stack: tuple[Path, ...] = ()) -> DictConfig:
    """A project config with its `includes:` (paths relative to the including file) merged in."""
    path = Path(path).resolve()
    if path in _stack:
        chain = " -> ".join(str(p) for p in _stack + (path,))
        raise ConfigError(f"config includes form a cycle: {chain}")
    node = read_yaml(path, _stack[-1] if _stack else None)
    includes = node.pop("includes", None) or []
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, (list, ListConfig)):
        raise ConfigError(f"'includes' in {path} must be a list of paths")
    layers = [load_project_file(path.parent / str(include), _stack + (path,)) for include in includes]
    return merge_layers(OmegaConf.create({}), layers + [node], _SINGLE_NODES)


def parse_cli(args: Sequence[str]) -> tuple[str | None, DictConfig]:
    """Split `config=path` from `key=value` overrides; values are typed as YAML (safely: a YAML
    tag or a malformed value is a one-line error naming the argument)."""
    config_path = None
    overrides = OmegaConf.create({})
    for arg in args:
        if "=" not in arg:
            raise ConfigError(f"command-line argument {arg!r} is not of the form key=value")
        key, value = arg.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"command-line argument {arg!r} has an empty key")
        if key == "config":
            config_path = value
            continue
        if key in LIST_KEYS and not value.lstrip().startswith("["):
            value = "[" + ",".join(v.strip() for v in value.split(",") if v.strip()) + "]"
        try:
            overrides.merge_with_dotlist([f"{key}={value}"])
        except yaml.YAMLError as exc:
            raise ConfigError(f"malformed YAML in command-line argument {arg!r}{yaml_problem(exc, position=False)}"
                              ) from None
        except (OmegaConfBaseException, ValueError) as exc:
            raise ConfigError(f"cannot parse command-line argument {arg!r}: {str(exc).splitlines()[0]}") from None
    return config_path, overrides


def _names(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


# -- the whole stack ---------------------------------------------------------------------
_SINGLE_NODES = single_node_patterns(schema.component_patterns())


def _component(registry: Any, name: str, key: str) -> Any:
    try:
        return registry.get(name)
    except RegistryError as exc:
        raise RegistryError(f"{key}: {exc}") from None


def build_base(model: str | None, datasets: Iterable[str], extra_models: Iterable[str] = (),
               extra_datasets: Iterable[str] = (), components: dict | None = None) -> DictConfig:
    """Package defaults plus the default configs (`component_config`) of the named components.

    `components`, when given, is filled with (section, name) -> component class.
    """
    from vlfw.registry import DATASETS, MODELS

    base = read_yaml(DEFAULTS_PATH)
    found = components if components is not None else {}
    sections = (("model_config", MODELS, _names(model), list(extra_models), "model"),
                ("dataset_config", DATASETS, list(datasets), list(extra_datasets), "datasets"))
    for section, registry, selected, extra, key in sections:
        for name in dict.fromkeys(selected + extra):
            where = key if name in selected else f"{section}.{name}"
            component = _component(registry, name, where)
            base[section][name] = component_config(component, path=f"{section}.{name}")
            found[(section, name)] = component
    return base


class _Provenance:
    """Where a key of the merged config was set: the highest layer holding it, else the
    defaults it came from."""

    def __init__(self, layers: Sequence[tuple[str, DictConfig]], components: dict) -> None:
        self.layers = list(layers)
        self.components = components

    def __call__(self, parts: tuple) -> str:
        for origin, layer in reversed(self.layers):
            if has_path(layer, parts):
                return origin
        component = self.components.get(tuple(parts[:2]))
        if component is not None:
            return f"in the default config of {describe_component(component)}"
        return f"in the package defaults ({DEFAULTS_PATH})"


def load_config(args: Sequence[str] = (), config_path: str | None = None,
                overrides: DictConfig | dict | None = None) -> DictConfig:
    """The fully merged and validated run config.

    `args` are command-line words (`config=... key=value ...`); `config_path` and `overrides`
    are the programmatic equivalents (overrides win over the CLI).
    """
    from vlfw import plugins

    cli_path, cli = parse_cli(list(args))
    config_path = config_path or cli_path
    layers: list[tuple[str, DictConfig]] = []
    if config_path:
        layers.append((f"in {config_path}", load_project_file(config_path)))
    if len(cli):
        layers.append(("on the command line", cli))
    if overrides:
        try:
            layers.append(("in the overrides", OmegaConf.create(overrides)))
        except OmegaConfBaseException as exc:
            raise ConfigError(f"invalid overrides: {str(exc).splitlines()[0]}") from None

    user = OmegaConf.merge(*(layer for _, layer in layers)) if layers else OmegaConf.create({})
    strict = user.get("plugins", {}).get("strict") if isinstance(user.get("plugins"), DictConfig) else None
    plugins.configure(strict=bool(strict) if strict is not None else None)

    defaults = read_yaml(DEFAULTS_PATH)
    model = user.get("model", defaults.model)
    datasets = _names(user.get("datasets", defaults.datasets))
    extra_models = [str(k) for k in (user.get("model_config") or {}).keys()]
    extra_datasets = [str(k) for k in (user.get("dataset_config") or {}).keys()]
    components: dict = {}
    base = build_base(model, datasets, extra_models, extra_datasets, components)

    choice_keys = [f"{section}.{name}.{dotted}" for (section, name), component in components.items()
                   for dotted in check_choices_declared(component, base[section][name])]
    for origin, layer in layers:
        validate_keys(layer, base, origin, allowed_values=choice_keys)
    try:
        config = merge_layers(base, [layer for _, layer in layers], _SINGLE_NODES)
        OmegaConf.resolve(config)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"cannot resolve the config: {str(exc).splitlines()[0]}") from None
    if config.datasets is None:
        config.datasets = []
    where = _Provenance(layers, components)
    validate_config(config, where, components)
    validate_run(config, where)
    return config


def save_config(config: DictConfig, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(OmegaConf.to_yaml(config, resolve=True), encoding="utf-8")
    os.replace(tmp, path)
