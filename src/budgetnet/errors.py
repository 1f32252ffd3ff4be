"""The errors budgetnet raises on purpose, in two branches the command line maps to exit codes.

`UsageError` (exit 2): the input was wrong (a recipe key, a file, a folder, a budget): fix the command and rerun.
It is also a `ValueError`, the error Python raises for a bad value, which callers and tests catch.
`RunFailed` (exit 1): the work failed for a stated reason (a full disk, a diverged loss, an export that differs).
Anything else that reaches the command line is a bug and keeps its traceback.
"""
from __future__ import annotations


class BudgetnetError(Exception):
    """An error budgetnet raised on purpose, with a one-line message naming the problem and the fix."""


class UsageError(BudgetnetError, ValueError):
    """The input was wrong: fix the command and rerun (exit code 2)."""


class RunFailed(BudgetnetError):
    """The work failed for a stated reason: out of memory, a full disk, a diverged run (exit code 1)."""
