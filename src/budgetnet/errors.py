"""The errors budgetnet raises on purpose, in two branches the command line maps to exit codes.

`UsageError` (exit 2): the input was wrong (a recipe key, a file, a folder, a budget): fix the command and rerun.
It is also a `ValueError`, the error Python raises for a bad value, which callers and tests catch.
`RunFailed` (exit 1): the work failed for a stated reason (a full disk, a diverged loss, an export that differs).
Anything else that reaches the command line is a bug and keeps its traceback.
"""
from __future__ import annotations

import difflib
import reprlib


class BudgetnetError(Exception):
    """An error budgetnet raised on purpose, with a one-line message naming the problem and the fix."""


class UsageError(BudgetnetError, ValueError):
    """The input was wrong: fix the command and rerun (exit code 2)."""


class RecipeError(UsageError):
    """A recipe that cannot be used: the message names the key and how to fix it."""


class RunFailed(BudgetnetError):
    """The work failed for a stated reason: out of memory, a full disk, a diverged run (exit code 1)."""


def shown(value: object) -> str:
    """A short repr of `value` for an error message: a few items of each container and level, strings cut to 100
    characters and numbers to 60, so that a hostile or mistaken value (megabytes, or a YAML alias bomb) is echoed
    in a short line (reprlib's repr, which stops at those bounds instead of building the whole text)."""
    short = reprlib.Repr()
    short.maxlevel, short.maxstring, short.maxlong, short.maxother = 2, 100, 60, 60
    short.maxlist = short.maxtuple = short.maxdict = short.maxset = 4
    return short.repr(value)


def did_you_mean(word: str, choices: list[str], prefix: str = "") -> str:
    """The tail of an unknown-name message: "; did you mean '<prefix><closest choice>'?", or "" when no choice is
    close (difflib's closest match)."""
    close = difflib.get_close_matches(word, choices, n=1)
    return f"; did you mean '{prefix}{close[0]}'?" if close else ""
