"""User-facing errors: one clear line naming what went wrong and what to do."""

from __future__ import annotations

import difflib
from typing import Iterable


class VlfwError(Exception):
    """An error the user can cause and fix. The CLI prints its message as one line."""


class ConfigError(VlfwError):
    """A malformed config, unknown key or wrong value type."""


class RegistryError(VlfwError):
    """An unknown or duplicate component name."""


class PluginError(VlfwError):
    """A plugin that failed to load while plugins.strict is on."""


class DataError(VlfwError):
    """A missing or corrupt data file, or a bad record."""


class CheckpointError(VlfwError):
    """A missing, corrupt or incompatible checkpoint, or one that cannot be written."""


class OutputError(VlfwError):
    """A file of the run (config.yaml, metrics, logs, weights) cannot be written: full disk, permissions."""


class Preempted(Exception):
    """Training stopped on SIGTERM after writing a checkpoint (vlfw.runner.preemption). Not an
    error: the job is meant to be requeued and resumed; the command line exits with `exit_code`."""

    exit_code = 143  # 128 + SIGTERM, what a process killed by SIGTERM reports to the shell


def close_matches(word: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Names among `candidates` that look like a typo of `word`."""
    return difflib.get_close_matches(word, list(candidates), n=n, cutoff=0.6)


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """' Did you mean: a, b?' or '' when nothing is close."""
    matches = close_matches(word, candidates)
    return f" Did you mean: {', '.join(matches)}?" if matches else ""
