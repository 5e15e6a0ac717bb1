"""Checks on a config: declared keys and their types (per layer), then the rules of
`vlfw.config.schema` and the components' own (on the merged config). Every error is one line
naming the key path and where it was set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf

from vlfw.config import schema
from vlfw.config.components import accepted_parameters, check_choices_declared, parameter_declarations
from vlfw.config.paths import Parts, find, format_path, has_path, matches, split_pattern, value_at
from vlfw.errors import ConfigError, RegistryError, did_you_mean

Where = Callable[[Parts], str]


def show(value: Any) -> str:
    if isinstance(value, (DictConfig, ListConfig)):
        return repr(OmegaConf.to_container(value, resolve=False))
    return repr(value)


# -- keys and types, one layer at a time ----------------------------------------------------------
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


def _check_not_container(path: str, default: Any, value: DictConfig | ListConfig, origin: str) -> None:
    """A list or mapping where the defaults hold a number, string or boolean."""
    if isinstance(default, (bool, int, float, str)):  # a null default says nothing about the type
        kind = "a list" if isinstance(value, ListConfig) else "a mapping"
        raise ConfigError(f"{path} must be {_type_name(default)} (like {default!r}), got {kind} {show(value)} {origin}")


def validate_keys(user: DictConfig, base: DictConfig, origin: str, prefix: Parts | str = (),
                  allowed_values: Iterable[str] = ()) -> None:
    """Reject keys of `user` that `base` does not declare, and values of the wrong type.

    `{type, params}` component nodes are left to `validate_config` (their params are checked
    against the component's constructor, not against the defaults), and so are the values of
    keys with a list of allowed values (`allowed_values`, dotted patterns, plus the schema's):
    those may mix types (e.g. auto | true | false).
    """
    if isinstance(prefix, str):
        prefix = tuple(p for p in prefix.split(".") if p)
    patterns = list(schema.component_patterns())
    allowed_values = set(allowed_values) | set(schema.CHOICES) | set(schema.FORMATS)
    for key in user.keys():
        parts = prefix + (str(key),)
        path = format_path(parts)
        if key not in base:
            known = [str(k) for k in base.keys()]
            hint = did_you_mean(str(key), known)
            if not hint:
                hint = f" Known keys here: {', '.join(sorted(known))}." if len(known) <= 30 else ""
            raise ConfigError(f"unknown config key {path!r} {origin}.{hint}")
        if any(matches(parts, pattern) for pattern in patterns):
            continue
        base_value = base._get_node(key)
        user_value = user._get_node(key)
        if isinstance(base_value, DictConfig) and not _is_open(base_value):
            if isinstance(user_value, DictConfig):
                validate_keys(user_value, base_value, origin, parts, allowed_values)
            elif user_value is not None and not OmegaConf.is_missing(user, key):
                raise ConfigError(f"{path} must be a mapping, got {user.get(key)!r} {origin}")
        elif isinstance(base_value, ListConfig):
            if not isinstance(user_value, ListConfig) and user.get(key) is not None:
                raise ConfigError(f"{path} must be a list, got {user.get(key)!r} {origin}")
        elif not isinstance(base_value, DictConfig):
            interpolated = OmegaConf.is_interpolation(user, key) or OmegaConf.is_interpolation(base, key)
            if interpolated or any(matches(parts, pattern) for pattern in allowed_values):
                continue
            if isinstance(user_value, (DictConfig, ListConfig)):
                _check_not_container(path, base.get(key), user_value, origin)
            else:
                _check_value(path, base.get(key), user.get(key), origin)


# -- rules on the merged config ---------------------------------------------------------------------
def _same(value: Any, allowed: Any) -> bool:
    return value == allowed and isinstance(value, bool) == isinstance(allowed, bool)


def _check_choice(config: DictConfig, parts: Parts, allowed: Sequence[Any], where: Where) -> None:
    value = value_at(config, parts)
    if any(_same(value, a) for a in allowed):
        return
    names = ["null" if a is None else str(a) for a in allowed]
    raise ConfigError(f"{format_path(parts)} must be one of {', '.join(names)}, got {show(value)} {where(parts)}."
                      f"{did_you_mean(str(value), names)}")


def _registry(name: str):
    import vlfw.registry as registries

    return getattr(registries, name)


def _lookup(registry_name: str, name: str, parts: Parts, where: Where) -> Any:
    try:
        return _registry(registry_name).get(name)
    except RegistryError as exc:
        raise RegistryError(f"{format_path(parts)} {where(parts)}: {exc}") from None


def _shape(spec: schema.ComponentNode) -> str:
    return "{type, params} mapping" + (" or a name" if spec.names else "")


def _check_component(config: DictConfig, parts: Parts, spec: schema.ComponentNode, where: Where) -> None:
    value = value_at(config, parts)
    if not spec.many:
        _check_entry(config, parts, spec, where)
    elif value is not None:
        if not isinstance(value, ListConfig):
            raise ConfigError(f"{format_path(parts)} must be a list of {spec.kind} entries ({_shape(spec)}s), "
                              f"got {show(value)} {where(parts)}")
        for index in range(len(value)):
            _check_entry(config, parts + (index,), spec, where)


def _parameters_of(name: Any, spec: schema.ComponentNode) -> list[str]:
    """The user parameters of the component `name` ([] when it is not a known name)."""
    registry = _registry(spec.registry)
    if not isinstance(name, str) or name not in registry:
        return []
    accepted, _ = accepted_parameters(registry.get(name), registry.base)
    return [a for a in accepted if a not in spec.injected]


def _entry_keys(entry: DictConfig, parts: Parts, spec: schema.ComponentNode, where: Where) -> None:
    for key in entry.keys():
        if key in schema.NODE_KEYS:
            continue
        if key == "weight" and spec.registry == "LOSSES" and parts[0] == "dataset_config":
            hint = (f" Loss weights are set in {format_path(parts[:2] + ('loss_weights',))}.<loss name> "
                    "(see docs/configs.md, Loss weights).")
        elif str(key) in _parameters_of(entry.get("type"), spec):
            hint = f" Parameters go under params: {format_path(parts + ('params', str(key)))}."
        else:
            hint = did_you_mean(str(key), schema.NODE_KEYS) or f" A {spec.kind} is {{type: <name>, params: {{...}}}}."
        raise ConfigError(f"unknown key {format_path(parts)}.{key} {where(parts + (str(key),))}.{hint}")


def _check_entry(config: DictConfig, parts: Parts, spec: schema.ComponentNode, where: Where) -> None:
    """One `{type, params}` node (or bare name): its shape, its type, its params."""
    entry = value_at(config, parts)
    path = format_path(parts)
    if spec.nullable and (entry is None or (isinstance(entry, DictConfig) and entry.get("type") is None)):
        if isinstance(entry, DictConfig):
            _entry_keys(entry, parts, spec, where)
            if entry.get("params"):
                raise ConfigError(f"{path} is off (type: null) but sets {path}.params {where(parts + ('params',))}; "
                                  "remove the params or give a type")
        return
    if isinstance(entry, str) and spec.names:
        name, params = entry, {}
        component = _lookup(spec.registry, name, parts, where)
    elif isinstance(entry, DictConfig):
        _entry_keys(entry, parts, spec, where)
        name = entry.get("type")
        if name is None or name == "":
            raise ConfigError(f"{path} needs a `type` (a {spec.kind} name) {where(parts)}")
        if not isinstance(name, str):
            raise ConfigError(f"{path}.type must be a {spec.kind} name, got {show(name)} {where(parts + ('type',))}")
        params = entry.get("params")
        if params is None:
            params = {}
        elif not isinstance(params, DictConfig):
            raise ConfigError(f"{path}.params must be a mapping, got {show(params)} {where(parts + ('params',))}")
        component = _lookup(spec.registry, name, parts + ("type",), where)
    else:
        raise ConfigError(f"{path} must be a {spec.kind} ({_shape(spec)}), got {show(entry)} {where(parts)}")
    accepted = _parameters_of(name, spec)
    _, required = accepted_parameters(component, _registry(spec.registry).base)
    for key in params.keys():
        if key not in accepted:
            key_parts = parts + ("params", str(key))
            raise ConfigError(
                f"unknown parameter {format_path(key_parts)} {where(key_parts)}: {spec.kind} {name!r} accepts "
                f"{', '.join(accepted) or 'no parameters'}.{did_you_mean(str(key), accepted)}")
    missing = [r for r in required if r not in spec.injected and r not in params]
    if missing:
        raise ConfigError(f"{path} ({spec.kind} {name!r}) needs {format_path(parts + ('params', missing[0]))} "
                          f"{where(parts)}")
    declared, _ = parameter_declarations(component, _registry(spec.registry).base)
    for key in params.keys():
        key_parts = parts + ("params", str(key))
        _check_parameter_value(key_parts, declared[str(key)], value_at(config, key_parts), spec, name, where)


# a parameter annotated with one of these (or it `| None`) is checked at load; others are not
_ANNOTATED = {("int",): "an integer", ("float",): "a number", ("float", "int"): "a number",
              ("bool",): "a boolean", ("str",): "a string"}


def _check_parameter_value(parts: Parts, parameter: Any, value: Any, spec: schema.ComponentNode, name: str,
                           where: Where) -> None:
    """A value of the type a component's constructor annotates (int, float, bool, str)."""
    annotation = parameter.annotation
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    kinds = tuple(sorted(k.strip() for k in str(text).split("|") if k.strip() != "None"))
    expected = _ANNOTATED.get(kinds)
    if expected is None or value is None:
        return
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = {"an integer": number and float(value).is_integer(), "a number": number,
          "a boolean": isinstance(value, bool), "a string": isinstance(value, str) or number}[expected]
    if not ok:
        raise ConfigError(f"{format_path(parts)} must be {expected} ({spec.kind} {name!r} takes {parameter.name}: "
                          f"{text}), got {show(value)} {where(parts)}")


def validate_config(config: DictConfig, where: Where, components: Mapping[Parts, Any] | None = None) -> None:
    """The schema's rules and the components' CONFIG_CHOICES on the merged, resolved `config`.

    `components` maps (section, name), e.g. ("dataset_config", "vqa2"), to the component class
    whose defaults that node holds. Rules apply to the keys that exist in `config`.
    """
    for pattern, allowed in schema.CHOICES.items():
        for parts in find(config, split_pattern(pattern)):
            _check_choice(config, parts, allowed, where)
    for pattern, (test, description) in schema.FORMATS.items():
        for parts in find(config, split_pattern(pattern)):
            value = value_at(config, parts)
            if not test(value):
                raise ConfigError(f"{format_path(parts)} must be {description}, got {show(value)} {where(parts)}")
    for pattern, registry in schema.REGISTRY_NAMES.items():
        for parts in find(config, split_pattern(pattern)):
            _lookup(registry, str(value_at(config, parts)), parts, where)
    for pattern, rule in schema.NUMBERS.items():
        for parts in find(config, split_pattern(pattern)):
            value = value_at(config, parts)
            if not rule.accepts(value):
                raise ConfigError(f"{format_path(parts)} must be {rule.describe()}, got {show(value)} {where(parts)}")
    for pattern, length in schema.LENGTHS.items():
        for parts in find(config, split_pattern(pattern)):
            value = value_at(config, parts)
            if isinstance(value, ListConfig) and len(value) != length:
                raise ConfigError(f"{format_path(parts)} must hold {length} values, got {show(value)} {where(parts)}")
    for prefix, component in (components or {}).items():
        node = value_at(config, prefix) if has_path(config, prefix) else None
        if not isinstance(node, DictConfig):
            continue
        for dotted, allowed in check_choices_declared(component, node).items():
            _check_choice(config, tuple(prefix) + tuple(dotted.split(".")), allowed, where)
    for pattern, spec in schema.component_patterns().items():
        for parts in find(config, split_pattern(pattern)):
            _check_component(config, parts, spec, where)


def validate_run(config: DictConfig, where: Where) -> None:
    """Checks that relate keys of a whole run config to each other."""
    datasets = [str(d) for d in (config.get("datasets") or [])]
    duplicates = sorted({d for d in datasets if datasets.count(d) > 1})
    if duplicates:
        raise ConfigError(f"datasets lists {', '.join(duplicates)} more than once {where(('datasets',))}")
    keyed = [tuple(split_pattern(p)) for p in schema.DATASET_KEYED]
    model = config.get("model")
    if model is not None:
        keyed.append(("model_config", str(model), "heads"))
    for parts in keyed:
        node = value_at(config, parts) if has_path(config, parts) else None
        if not isinstance(node, DictConfig):
            continue
        for key in node.keys():
            if str(key) not in datasets:
                key_parts = parts + (str(key),)
                raise ConfigError(
                    f"{format_path(key_parts)} {where(key_parts)} names dataset {str(key)!r}, which is not in datasets "
                    f"({', '.join(datasets) or 'none'}).{did_you_mean(str(key), datasets)}")
    save_dir = config.get("save_dir")
    if save_dir is not None and Path(str(save_dir)).expanduser().is_file():
        raise ConfigError(f"save_dir {save_dir} {where(('save_dir',))} is an existing file; it must be a directory "
                          "(or not exist yet)")
    training = config.get("training")
    run_type = str(config.get("run_type", ""))
    if isinstance(training, DictConfig) and "train" in run_type.split("_"):
        if training.get("max_updates") is None and training.get("max_epochs") is None:
            raise ConfigError("training.max_updates and training.max_epochs are both null "
                              f"{where(('training', 'max_updates'))}: set one of them to train")
