"""Choice and integer fields of the recipe's sections: a field typed `Literal[...]` allows exactly the Literal's
values, and an integer field the range its section's table gives it.

The allowed values are written once, in the type or the table (config.py, design/spec.py); `choices` reads them, and
`check_choices` and `check_ranges`, which each section's validate() calls, are the one check of them; `check_rule`
is the one form of every other rule's message.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, Literal

from .errors import RecipeError, UsageError, shown


def choices(hint: Any) -> tuple[str, ...]:
    """The values a `Literal[...]` type allows, e.g. choices(OptimizerName) == ("sgd", "adam", ...)."""
    return typing.get_args(hint)


def check_choices(section: Any, prefix: str = "", error: type[UsageError] = UsageError) -> None:
    """Raise `error` "<prefix><key>='value' is unknown: use one of a, b" for the first Literal-typed field of
    dataclass instance `section` whose value is not one of its Literal's."""
    hints = typing.get_type_hints(type(section))
    for f in dataclasses.fields(section):
        hint, value = hints[f.name], getattr(section, f.name)
        if typing.get_origin(hint) is Literal and value not in choices(hint):
            raise error(f"{prefix}{f.name}={shown(value)} is unknown: use one of {', '.join(choices(hint))}")


def check_ranges(section: Any, ranges: dict[str, tuple[int, int]], prefix: str = "",
                 error: type[UsageError] = UsageError) -> None:
    """Raise `error` "<prefix><key>=value must be LO or more" (or "at most HI") for the first field of dataclass
    instance `section` outside its `ranges[prefix + name]` = (LO, HI), inclusive; a list is checked item by item
    (key.0, key.1, ...), None passes (a field's "unset")."""
    for f in dataclasses.fields(section):
        if f"{prefix}{f.name}" not in ranges:
            continue
        lo, hi = ranges[f"{prefix}{f.name}"]
        value = getattr(section, f.name)
        items = [(f"{f.name}.{i}", v) for i, v in enumerate(value)] if isinstance(value, list) else [(f.name, value)]
        for name, v in items:
            if v is not None and not lo <= v <= hi:
                raise error(f"{prefix}{name}={v} must be {lo:,} or more" if v < lo else
                            f"{prefix}{name}={v} must be at most {hi:,}")


def check_rule(ok: bool, key: str, value: Any, rule: str, error: type[UsageError] = RecipeError) -> None:
    """Raise `error` "key=value rule" unless `ok`."""
    if not ok:
        raise error(f"{key}={value} {rule}")
