"""Preemption: SIGTERM, what cluster schedulers (and torchrun) send before they kill a job, makes
training save a checkpoint at the next update boundary and stop with exit code 143.

While training runs, the signal only sets a flag. After each update's hooks every rank tells the
others whether it saw one (one all-reduce), so all ranks stop after the same update; the trainer
then writes `update_<N>.pt` (unless the checkpoint hook just did) and raises `Preempted`, which
the command line turns into one line and exit code 143. A requeued job run with
`checkpoint.resume=auto` continues from that checkpoint exactly.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import torch

from vlfw.distributed import all_reduce_sum, is_distributed

SIGNALS = (signal.SIGTERM,)


class PreemptionSignal:
    """A context in which SIGTERM only sets `received`; `requested()` asks every rank (collective)."""

    def __init__(self) -> None:
        self.received = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "PreemptionSignal":
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for number in SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, signal.SIG_DFL if handler is None else handler)  # None: set outside Python
        self._previous.clear()

    def _handle(self, number: int, frame: Any) -> None:
        self.received = True  # nothing else here: the loop acts at the next update boundary

    def requested(self, device: torch.device) -> bool:
        """Whether any rank received the signal (every rank must call this at the same point)."""
        if not is_distributed():
            return self.received
        flag = torch.tensor([1.0 if self.received else 0.0], device=device)
        return bool(all_reduce_sum(flag).item() > 0)

