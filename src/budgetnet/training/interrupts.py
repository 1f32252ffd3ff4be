"""Stopping by signal: `Interrupted` for Ctrl-C and SIGTERM, and the block within which SIGTERM raises it."""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Callable, Iterator


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped the work; `signum` gives the conventional exit code 128 + signum."""

    def __init__(self, message: str = "", signum: int = signal.SIGINT) -> None:
        super().__init__(message)
        self.signum = signum


class _SigtermHandler:
    """Raises Interrupted for SIGTERM, and keeps it: `check` raises it again where Python dropped the first."""

    def __init__(self) -> None:
        self.received: list[int] = []

    def __call__(self, signum: int, frame: object) -> None:
        self.received.append(signum)
        raise Interrupted("SIGTERM", signum)

    def check(self, *args: object) -> None:
        if self.received:
            raise Interrupted("SIGTERM", self.received[0])


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[Callable[..., None]]:
    """Within the block, SIGTERM (SLURM preemption, docker stop, Kubernetes) raises Interrupted like Ctrl-C
    (only the main thread may set signal handlers; elsewhere nothing changes).

    Python drops an exception that a handler raises inside a garbage-collector callback (a search collects after
    every trial), so the signal is also kept: the function the block gets raises it again when called at a safe
    point. A nested block shares the outer one's handler.
    """
    main = threading.current_thread() is threading.main_thread()
    outer = signal.getsignal(signal.SIGTERM) if main else None
    if not main or isinstance(outer, _SigtermHandler):
        yield outer.check if main else (lambda *args: None)
        return
    handler, hook = _SigtermHandler(), sys.unraisablehook

    def unraisable(info: object) -> None:  # the dropped interrupt is kept by the handler: no traceback for it
        if not isinstance(info.exc_value, Interrupted):
            hook(info)

    signal.signal(signal.SIGTERM, handler)
    sys.unraisablehook = unraisable
    try:
        yield handler.check
    finally:
        signal.signal(signal.SIGTERM, outer)
        sys.unraisablehook = hook
