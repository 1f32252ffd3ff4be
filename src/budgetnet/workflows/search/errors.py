"""What the search raises on purpose."""
from __future__ import annotations

from ...errors import UsageError
from ...training.interrupts import Interrupted


class SearchError(UsageError):
    """A study, storage or device that cannot be used: the message says what to pass instead."""


class RunDirRefused(SearchError):
    """A queued trial's recorded run directory is not under --out: the trial is failed, nothing is written there."""


class SearchInterrupted(Interrupted):
    """SIGINT or SIGTERM stopped the worker: its trial is marked failed and queued to resume."""
