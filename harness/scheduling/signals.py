"""Stop requests: SIGTERM and SIGHUP (a cluster's preemption, `timeout`, a closed terminal) act like Ctrl-C."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """The run was asked to stop; `signame` says how (Ctrl-C, SIGTERM, SIGHUP)."""

    def __init__(self, signame: str = "Ctrl-C") -> None:
        super().__init__(signame)
        self.signame = signame
        self.exit_code = 128 + {"Ctrl-C": signal.SIGINT, "SIGTERM": signal.SIGTERM, "SIGHUP": signal.SIGHUP}.get(signame, signal.SIGINT)


def signame(exc: BaseException) -> str:
    """How a KeyboardInterrupt came: the signal's name, or Ctrl-C."""
    return getattr(exc, "signame", "Ctrl-C")


@contextmanager
def stop_signals_interrupt() -> Iterator[None]:
    """Inside the block, SIGINT, SIGTERM and SIGHUP raise Interrupted in the main thread; later ones are ignored.

    Ignoring the repeats lets the cleanup (kill workers, mark running jobs interrupted) finish even when a
    scheduler sends SIGTERM twice or the user presses Ctrl-C again.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        for s in STOP_SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        raise Interrupted("Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name)

    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
