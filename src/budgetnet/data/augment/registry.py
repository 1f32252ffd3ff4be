"""The policy registry: a recipe names each augmentation; build_policy validates its parameters and builds it."""
from __future__ import annotations

import dataclasses
import difflib
from typing import Callable

from torch import Tensor

from ...errors import UsageError, shown

POLICIES: dict[str, type] = {}


def register(name: str) -> Callable[[type], type]:
    """Class decorator: make a policy dataclass selectable by `name` in a recipe's augment list."""
    def add(cls: type) -> type:
        POLICIES[name] = cls
        return cls
    return add


class Policy:
    """A batched augmentation: (images [V*B, 3, H, W], targets [B] or [B, K]) -> the same, augmented.

    Images are uint8, or float32 once a policy has mixed pixels (augmix, mixup: in [0, 1]) or jittered them
    (brightness_contrast: a little beyond [0, 1]). With V > 1 views
    (AugMix with JSD) the rows are view-major and the targets are shared by the V views.
    """
    mixes_labels = False  # mixup, cutmix: targets become soft labels [B, K]

    def __call__(self, images: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


def check(condition: bool, policy: str, message: str) -> None:
    """Raise ValueError(f"augment policy {policy!r}: {message}") unless `condition`."""
    if not condition:
        raise UsageError(f"augment policy {policy!r}: {message}")


def check_int(value: object, lo: int, hi: int, policy: str, key: str) -> None:
    """Raise UsageError unless parameter `key` of `policy` is an int in [lo, hi] (every int parameter has a range, so
    that no value reaches torch's int64 arguments out of theirs)."""
    check(isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi, policy,
          f"{key} must be an int in [{lo}, {hi}], got {shown(value)}")


def build_policy(spec: dict) -> Policy:
    """Build one policy from its recipe entry, e.g. {"name": "crop", "padding": 4}, validating names and keys."""
    if not isinstance(spec, dict) or "name" not in spec:
        raise UsageError(f"augment entry {spec!r} must be a mapping with a 'name' key")
    params = {k: v for k, v in spec.items() if k != "name"}
    name = spec["name"]
    if name not in POLICIES:
        close = difflib.get_close_matches(str(name), POLICIES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UsageError(f"unknown augment policy {name!r}: valid names are {', '.join(sorted(POLICIES))}{hint}")
    cls = POLICIES[name]
    valid = [f.name for f in dataclasses.fields(cls)]
    for key in params:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UsageError(f"augment policy {name!r} has no parameter {key!r}: valid keys are "
                             f"{', '.join(valid) or '(none)'}{hint}")
    return cls(**params)
