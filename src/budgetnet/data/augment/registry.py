"""The ops' registry: each policy record of data.policies (what a recipe names) has the batched op that runs it."""
from __future__ import annotations

import dataclasses
from typing import Callable

from torch import Tensor

from ..policies import PolicyConfig

OPS: dict[type[PolicyConfig], type[Policy]] = {}


def register(config: type[PolicyConfig]) -> Callable[[type[Policy]], type[Policy]]:
    """Class decorator: the op class (a subclass of the policy record `config`) that runs `config`'s policy."""
    def add(cls: type[Policy]) -> type[Policy]:
        OPS[config] = cls
        return cls
    return add


class Policy:
    """A batched augmentation: (images [V*B, 3, H, W], targets [B] or [B, K]) -> the same, augmented.

    Images are uint8, or float32 once a policy has mixed pixels (augmix, mixup: in [0, 1]) or jittered them
    (brightness_contrast: a little beyond [0, 1]). With V > 1 views
    (AugMix with JSD) the rows are view-major and the targets are shared by the V views.
    """

    def __call__(self, images: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


def build_policy(config: PolicyConfig) -> Policy:
    """The op of one (checked) policy record, with the record's parameters."""
    params = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.init}
    return OPS[type(config)](**params)
