"""Layered configuration: package defaults <- component defaults <- includes <- project file <- CLI.

Every key a user sets must exist in the defaults (the package's or the selected components'),
so a typo is an error with close-match suggestions instead of a setting that silently does
nothing. A mapping whose default is empty (``{}``) is open: it takes any keys.
"""

from __future__ import annotations

import importlib
import inspect
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from vlfw.errors import ConfigError, did_you_mean

DEFAULTS_PATH = Path(__file__).with_name("defaults.yaml")
# keys whose value may be given on the command line as a comma-separated list
LIST_KEYS = {"datasets"}


# -- reading files ---------------------------------------------------------------------------
def _read_yaml(path: Path, included_from: Path | None = None) -> DictConfig:
    where = f" (included from {included_from})" if included_from else ""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}{where}")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"malformed YAML in {path}{at}: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level, not {type(data).__name__}")
    try:
        return OmegaConf.create(data)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"invalid config in {path}: {exc}") from None


def load_project_file(path: str | os.PathLike, _stack: tuple[Path, ...] = ()) -> DictConfig:
    """A project config with its `includes:` (paths relative to the including file) merged in."""
    path = Path(path).resolve()
    if path in _stack:
        chain = " -> ".join(str(p) for p in _stack + (path,))
        raise ConfigError(f"config includes form a cycle: {chain}")
    node = _read_yaml(path, _stack[-1] if _stack else None)
    includes = node.pop("includes", None) or []
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, (list, ListConfig)):
        raise ConfigError(f"'includes' in {path} must be a list of paths")
    merged = OmegaConf.create({})
    for include in includes:
        child = load_project_file(path.parent / str(include), _stack + (path,))
        merged = OmegaConf.merge(merged, child)
    return OmegaConf.merge(merged, node)


def parse_cli(args: Sequence[str]) -> tuple[str | None, DictConfig]:
    """Split `config=path` from `key=value` overrides; values are typed as YAML."""
    config_path = None
    dotlist = []
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
        if key in LIST_KEYS and not value.startswith("["):
            value = "[" + ",".join(v.strip() for v in value.split(",") if v.strip()) + "]"
        dotlist.append(f"{key}={value}")
    try:
        return config_path, OmegaConf.from_dotlist(dotlist)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"cannot parse command-line overrides: {exc}") from None


# -- component defaults --------------------------------------------------------------------
def component_defaults(component: Any) -> DictConfig:
    """A component's DEFAULT_CONFIG: a dict, or a YAML path relative to its module."""
    default = getattr(component, "DEFAULT_CONFIG", None) or {}
    if isinstance(default, str):
        module = importlib.import_module(component.__module__)
        path = Path(inspect.getfile(module)).parent / default
        return _read_yaml(path)
    return OmegaConf.create(default)


def _names(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


# -- validation ------------------------------------------------------------------------------
def _is_open(node: Any) -> bool:
    return isinstance(node, DictConfig) and len(node) == 0


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(type(value), type(value).__name__)


def _check_value(path: str, default: Any, value: Any, origin: str) -> None:
    if default is None or value is None:
        return
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, (int, float)):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if isinstance(default, int) and isinstance(value, float) and not value.is_integer():
            ok = False
    elif isinstance(default, str):
        ok = isinstance(value, str) or (isinstance(value, (int, float)) and not isinstance(value, bool))
    else:
        ok = True
    if not ok:
        raise ConfigError(
            f"{path} must be {_type_name(default)} (like {default!r}), got {value!r} {origin}"
        )


def validate_keys(user: DictConfig, base: DictConfig, origin: str, prefix: str = "") -> None:
    """Reject keys of `user` that `base` does not declare, and values of the wrong type."""
    for key in user.keys():
        path = f"{prefix}{key}"
        if key not in base:
            known = [str(k) for k in base.keys()]
            hint = did_you_mean(str(key), known)
            if not hint:
                hint = f" Known keys here: {', '.join(sorted(known))}." if len(known) <= 30 else ""
            raise ConfigError(f"unknown config key {path!r} {origin}.{hint}")
        base_value = base._get_node(key)
        user_value = user._get_node(key)
        if isinstance(base_value, DictConfig) and not _is_open(base_value):
            if isinstance(user_value, DictConfig):
                validate_keys(user_value, base_value, origin, path + ".")
            elif user_value is not None and not OmegaConf.is_missing(user, key):
                raise ConfigError(f"{path} must be a mapping, got {user.get(key)!r} {origin}")
        elif isinstance(base_value, ListConfig):
            if not isinstance(user_value, ListConfig) and user.get(key) is not None:
                raise ConfigError(f"{path} must be a list, got {user.get(key)!r} {origin}")
        elif not isinstance(base_value, DictConfig) and not isinstance(user_value, (DictConfig, ListConfig)):
            if not (OmegaConf.is_interpolation(user, key) or OmegaConf.is_interpolation(base, key)):
                _check_value(path, base.get(key), user.get(key), origin)


# -- the whole stack ---------------------------------------------------------------------
def build_base(model: str | None, datasets: Iterable[str], extra_models: Iterable[str] = (),
               extra_datasets: Iterable[str] = ()) -> DictConfig:
    """Package defaults plus the default configs of the named components."""
    from vlfw.registry import DATASETS, MODELS

    base = _read_yaml(DEFAULTS_PATH)
    for name in dict.fromkeys(_names(model) + list(extra_models)):
        base.model_config[name] = component_defaults(MODELS.get(name))
    for name in dict.fromkeys(list(datasets) + list(extra_datasets)):
        base.dataset_config[name] = component_defaults(DATASETS.get(name))
    return base


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
        layers.append(("in the overrides", OmegaConf.create(overrides)))

    user = OmegaConf.merge(*(layer for _, layer in layers)) if layers else OmegaConf.create({})
    strict = user.get("plugins", {}).get("strict") if isinstance(user.get("plugins"), DictConfig) else None
    plugins.configure(strict=bool(strict) if strict is not None else None)

    defaults = _read_yaml(DEFAULTS_PATH)
    model = user.get("model", defaults.model)
    datasets = _names(user.get("datasets", defaults.datasets))
    extra_models = [str(k) for k in (user.get("model_config") or {}).keys()]
    extra_datasets = [str(k) for k in (user.get("dataset_config") or {}).keys()]
    base = build_base(model, datasets, extra_models, extra_datasets)

    for origin, layer in layers:
        validate_keys(layer, base, origin)
    try:
        config = OmegaConf.merge(base, *(layer for _, layer in layers))
        OmegaConf.resolve(config)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"cannot resolve the config: {exc}") from None
    if config.datasets is None:
        config.datasets = []
    return config


def save_config(config: DictConfig, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(OmegaConf.to_yaml(config, resolve=True), encoding="utf-8")
    os.replace(tmp, path)
