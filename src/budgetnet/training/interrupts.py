"""Stopping by signal at safe points: Ctrl-C and SIGTERM only record a stop request, which the work checks
where stopping is safe (after a training step, an epoch report, a trial) and turns into `Interrupted`."""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)  # Ctrl-C; SLURM preemption, docker stop, Kubernetes


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped the work; `signum` gives the conventional exit code 128 + signum."""

    def __init__(self, message: str = "", signum: int = signal.SIGINT) -> None:
        super().__init__(message)
        self.signum = signum


class StopRequest:
    """The first Ctrl-C or SIGTERM received within `stop_on_signals`, if any.

    The signal handler only records it and says so on stderr; a second one while the first is pending ends the
    process at once with the conventional exit code, without unwinding (every file on disk is then complete or a
    temporary one that the next run removes)."""

    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def check(self, *args: object) -> None:
        """Raise Interrupted if a stop was requested (takes and ignores arguments, so it serves as a callback)."""
        if self.signum is not None:
            raise Interrupted(signal.Signals(self.signum).name, self.signum)

    def handle(self, signum: int, frame: object) -> None:
        """The signal handler: record the first signal, exit at once on the second. It writes with os.write,
        which cannot collide with a print or a progress bar that the signal interrupted."""
        name = signal.Signals(signum).name
        if self.signum is not None:
            os.write(2, f"\nbudgetnet: second {name}: exiting now\n".encode())
            os._exit(128 + signum)
        self.signum = signum
        os.write(2, f"\nbudgetnet: {name} received: stopping at the next safe point (the running step, epoch "
                    "report or trial finishes first); a second Ctrl-C or SIGTERM exits at once, leaving every file "
                    "complete or temporary\n".encode())


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """Within the block, Ctrl-C and SIGTERM record a stop request instead of interrupting whatever code runs;
    the block checks the request it gets (`requested`, `check()`) at its safe points.

    Only the main thread may set signal handlers: elsewhere the request never fires. A nested block (a run's
    training inside a search) shares the outer block's request. The previous handlers return on the way out.
    """
    if threading.current_thread() is not threading.main_thread():
        yield StopRequest()
        return
    outer = signal.getsignal(signal.SIGTERM)
    owner = getattr(outer, "__self__", None)
    if isinstance(owner, StopRequest):
        yield owner
        return
    request = StopRequest()
    previous = {s: signal.signal(s, request.handle) for s in SIGNALS}
    try:
        yield request
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
