"""Run logs: console lines, `<save_dir>/train_log.jsonl`, TensorBoard scalars (rank 0 only)."""

from __future__ import annotations

import json
import logging
import os
import resource
import sys
from pathlib import Path
from typing import Any, Mapping

import torch

log = logging.getLogger("vlfw.runner")


def peak_memory_mb(device: torch.device) -> float:
    """CUDA max allocated memory, or the process's peak resident set size on CPU, in MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def ensure_console_handler() -> None:
    """Show the runner's INFO lines when the application configured no logging."""
    root = logging.getLogger()
    if not root.handlers and not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
    if log.level == logging.NOTSET:
        log.setLevel(logging.INFO)


class RunLogger:
    """Writes scalar dicts to the console, JSON lines and TensorBoard. Inactive off rank 0."""

    def __init__(self, save_dir: str | os.PathLike, active: bool, jsonl: bool = True,
                 tensorboard: bool = True, resume_update: int | None = None) -> None:
        self.active = active
        self.jsonl_path = Path(save_dir) / "train_log.jsonl" if (active and jsonl) else None
        self.writer = None
        if not active:
            return
        if self.jsonl_path is not None and resume_update is not None and self.jsonl_path.is_file():
            self._truncate_after(resume_update)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events logged after the checkpoint a resumed run continues from
            self.writer = SummaryWriter(str(Path(save_dir) / "tensorboard"),
                                        purge_step=resume_update + 1 if resume_update is not None else None)

    def _truncate_after(self, update: int) -> None:
        """Drop log lines written after the checkpoint (a killed run logged them; they are redone)."""
        kept = []
        for line in self.jsonl_path.read_text(encoding="utf-8").splitlines():
            try:
                if int(json.loads(line).get("update", 0)) <= update:
                    kept.append(line)
            except (ValueError, AttributeError):
                continue
        self.jsonl_path.write_text("".join(k + "\n" for k in kept), encoding="utf-8")

    def log(self, update: int, scalars: Mapping[str, float], kind: str = "train", console: bool = True) -> None:
        if not self.active:
            return
        if console:
            shown = "  ".join(f"{k}={_fmt(v)}" for k, v in scalars.items())
            log.info("[%s] update %d  %s", kind, update, shown)
        if self.jsonl_path is not None:
            record = {"update": int(update), "kind": kind, **{k: _plain(v) for k, v in scalars.items()}}
            with open(self.jsonl_path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in scalars.items():
                if isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, update)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
            self.writer = None


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.item()
    return value


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
