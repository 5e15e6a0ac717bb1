"""Reading YAML safely: files and command-line values, with one-line errors."""

from __future__ import annotations

from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from vlfw.errors import ConfigError


def yaml_problem(exc: yaml.YAMLError, position: bool = True) -> str:
    """' at line L, column C: <what is wrong>' for a YAML error (tags included: configs are data)."""
    mark = getattr(exc, "problem_mark", None)
    at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark and position else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    hint = ""
    if context and ("flow" in context or "quoted" in context):
        hint = " (a bracket, brace or quote is not closed?)"
    return f"{at}: {context + ': ' if context else ''}{problem}{hint}"


def read_yaml(path: Path, included_from: Path | None = None) -> DictConfig:
    """The mapping a YAML file holds (safe loader: no tags, nothing executed)."""
    where = f" (included from {included_from})" if included_from else ""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}{where}")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        raise ConfigError(f"malformed YAML in {path}{yaml_problem(exc)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level, not {type(data).__name__}")
    try:
        return OmegaConf.create(data)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"invalid config in {path}: {exc}") from None
