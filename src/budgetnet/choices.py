"""Choice fields of the recipe's sections: a field typed `Literal[...]` allows exactly the Literal's values.

The allowed values are written once, in the type (config.py, design/spec.py); `choices` reads them and `check_choices`,
which each section's validate() calls, is the one check of them.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, Literal

from .errors import UsageError


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
            raise error(f"{prefix}{f.name}={value!r} is unknown: use one of {', '.join(choices(hint))}")
