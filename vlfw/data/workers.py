"""What every DataLoader of a run shares in its worker processes."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
from typing import Iterator

from vlfw.errors import DataError, VlfwError


def loader_worker_init(worker_id: int) -> None:
    """A DataLoader worker ends on a SIGTERM from its main process (the loader shutting down, the
    main process exiting), as torch's own worker handler does, and ignores one from anyone else.
    Cluster schedulers and torchrun signal the whole process group: the main process then saves a
    checkpoint at the next update boundary (vlfw.runner.preemption) and needs its workers' batches
    until then. The sender is only known to `sigwaitinfo`, so a thread waits for the signal."""
    if not hasattr(signal, "sigwaitinfo") or threading.current_thread() is not threading.main_thread():
        return
    parent = os.getppid()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # the thread below inherits the mask
    threading.Thread(target=_wait_for_termination, args=(parent,), name="vlfw-loader-sigterm", daemon=True).start()


def _wait_for_termination(parent: int) -> None:
    while True:
        info = signal.sigwaitinfo({signal.SIGTERM})
        if info.si_pid == parent or os.getppid() != parent:
            os._exit(0)


# torch re-raises a worker's exception from its type name and formatted traceback only: a vlfw
# error whose constructor takes several arguments becomes a RuntimeError, the others carry the
# whole worker traceback in their message. Both are turned back into the one-line error.
_CAUGHT = re.compile(r"^Caught \w+ in DataLoader worker process \d+\.")
_RAISED = re.compile(r"^vlfw(?:\.\w+)+: ", re.M)


def worker_error(error: BaseException) -> VlfwError | None:
    """The vlfw error a DataLoader worker raised, rebuilt from torch's copy of it; None if it is
    not one."""
    if not isinstance(error, (RuntimeError, VlfwError)):
        return None
    text = str(error)
    raised = list(_RAISED.finditer(text)) if _CAUGHT.match(text) else []
    if not raised:
        return None
    message = text[raised[-1].end():].strip()
    return type(error)(message) if isinstance(error, VlfwError) else DataError(message)


@contextlib.contextmanager
def one_line_worker_errors() -> Iterator[None]:
    """Around the iteration of a DataLoader: a vlfw error of a worker is raised as one line."""
    try:
        yield
    except (RuntimeError, VlfwError) as error:
        rebuilt = worker_error(error)
        if rebuilt is None:
            raise
        raise rebuilt from None
