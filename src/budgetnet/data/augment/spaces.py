"""The augmentation spaces and AutoAugment policy tables, copied from torchvision 0.29
(torchvision/transforms/v2/_auto_augment.py: each class's `_AUGMENTATION_SPACE`, AugMix's
`_PARTIAL_AUGMENTATION_SPACE`, AutoAugment's `_get_policies`), whose ops ops.py reproduces. Copied rather than
read because those attributes are private; tests/test_augment_ops.py checks that the copies still equal them.

A space maps an op name to (magnitude bins as a function of (num_bins, height, width), or None for ops without a
magnitude; whether the magnitude's sign is drawn at random). A policy is a list of sub-policies, each two
(op name, probability, magnitude bin or None) stages.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

Space = dict[str, tuple[Callable[[int, int, int], Optional[Tensor]], bool]]


def _linspace(start: float, end: float) -> Callable[[int, int, int], Tensor]:
    return lambda num_bins, height, width: torch.linspace(start, end, num_bins)


def _posterize(top: int, steps: int) -> Callable[[int, int, int], Tensor]:
    """Bits from `top` down by `steps` over the bins, rounded (torchvision's formula)."""
    return lambda num_bins, height, width: (top - (torch.arange(num_bins) / ((num_bins - 1) / steps))).round().int()


def _none(num_bins: int, height: int, width: int) -> None:
    return None


_TAIL: Space = {"AutoContrast": (_none, False), "Equalize": (_none, False)}
_COLOUR_09: Space = {name: (_linspace(0.0, 0.9), True) for name in ("Brightness", "Color", "Contrast", "Sharpness")}
_GEOMETRY_AUTO: Space = {
    "ShearX": (_linspace(0.0, 0.3), True), "ShearY": (_linspace(0.0, 0.3), True),
    "TranslateX": (lambda num_bins, height, width: torch.linspace(0.0, 150.0 / 331.0 * width, num_bins), True),
    "TranslateY": (lambda num_bins, height, width: torch.linspace(0.0, 150.0 / 331.0 * height, num_bins), True),
    "Rotate": (_linspace(0.0, 30.0), True),
}
AUTOAUGMENT: Space = {**_GEOMETRY_AUTO, **_COLOUR_09, "Posterize": (_posterize(8, 4), False),
                      "Solarize": (_linspace(1.0, 0.0), False), **_TAIL, "Invert": (_none, False)}
RANDAUGMENT: Space = {"Identity": (_none, False), **_GEOMETRY_AUTO, **_COLOUR_09,
                      "Posterize": (_posterize(8, 4), False), "Solarize": (_linspace(1.0, 0.0), False), **_TAIL}
TRIVIALAUGMENT: Space = {
    "Identity": (_none, False), "ShearX": (_linspace(0.0, 0.99), True), "ShearY": (_linspace(0.0, 0.99), True),
    "TranslateX": (_linspace(0.0, 32.0), True), "TranslateY": (_linspace(0.0, 32.0), True),
    "Rotate": (_linspace(0.0, 135.0), True),
    **{name: (_linspace(0.0, 0.99), True) for name in ("Brightness", "Color", "Contrast", "Sharpness")},
    "Posterize": (_posterize(8, 6), False), "Solarize": (_linspace(1.0, 0.0), False), **_TAIL,
}
AUGMIX_PARTIAL: Space = {
    "ShearX": (_linspace(0.0, 0.3), True), "ShearY": (_linspace(0.0, 0.3), True),
    "TranslateX": (lambda num_bins, height, width: torch.linspace(0.0, width / 3.0, num_bins), True),
    "TranslateY": (lambda num_bins, height, width: torch.linspace(0.0, height / 3.0, num_bins), True),
    "Rotate": (_linspace(0.0, 30.0), True), "Posterize": (_posterize(4, 4), False),
    "Solarize": (_linspace(1.0, 0.0), False), **_TAIL,
}
AUGMIX: Space = {**AUGMIX_PARTIAL, **_COLOUR_09}
SPACES: dict[str, Space] = {"AutoAugment": AUTOAUGMENT, "RandAugment": RANDAUGMENT,
                            "TrivialAugmentWide": TRIVIALAUGMENT, "AugMix": AUGMIX, "AugMix-partial": AUGMIX_PARTIAL}

Stage = tuple[str, float, Optional[int]]
AUTOAUGMENT_POLICIES: dict[str, list[tuple[Stage, Stage]]] = {
    "cifar10": [
        (("Invert", 0.1, None), ("Contrast", 0.2, 6)),
        (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
        (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
        (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
        (("AutoContrast", 0.5, None), ("Equalize", 0.9, None)),
        (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
        (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
        (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
        (("Equalize", 0.6, None), ("Equalize", 0.5, None)),
        (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
        (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
        (("Equalize", 0.3, None), ("AutoContrast", 0.4, None)),
        (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
        (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
        (("Solarize", 0.5, 2), ("Invert", 0.0, None)),
        (("Equalize", 0.2, None), ("AutoContrast", 0.6, None)),
        (("Equalize", 0.2, None), ("Equalize", 0.6, None)),
        (("Color", 0.9, 9), ("Equalize", 0.6, None)),
        (("AutoContrast", 0.8, None), ("Solarize", 0.2, 8)),
        (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
        (("Solarize", 0.4, 5), ("AutoContrast", 0.9, None)),
        (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
        (("AutoContrast", 0.9, None), ("Solarize", 0.8, 3)),
        (("Equalize", 0.8, None), ("Invert", 0.1, None)),
        (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, None)),
    ],
    "imagenet": [
        (("Posterize", 0.4, 8), ("Rotate", 0.6, 9)),
        (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
        (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
        (("Posterize", 0.6, 7), ("Posterize", 0.6, 6)),
        (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
        (("Equalize", 0.4, None), ("Rotate", 0.8, 8)),
        (("Solarize", 0.6, 3), ("Equalize", 0.6, None)),
        (("Posterize", 0.8, 5), ("Equalize", 1.0, None)),
        (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)),
        (("Equalize", 0.6, None), ("Posterize", 0.4, 6)),
        (("Rotate", 0.8, 8), ("Color", 0.4, 0)),
        (("Rotate", 0.4, 9), ("Equalize", 0.6, None)),
        (("Equalize", 0.0, None), ("Equalize", 0.8, None)),
        (("Invert", 0.6, None), ("Equalize", 1.0, None)),
        (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
        (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
        (("Color", 0.8, 8), ("Solarize", 0.8, 7)),
        (("Sharpness", 0.4, 7), ("Invert", 0.6, None)),
        (("ShearX", 0.6, 5), ("Equalize", 1.0, None)),
        (("Color", 0.4, 0), ("Equalize", 0.6, None)),
        (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
        (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
        (("Invert", 0.6, None), ("Equalize", 1.0, None)),
        (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
        (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
    ],
    "svhn": [
        (("ShearX", 0.9, 4), ("Invert", 0.2, None)),
        (("ShearY", 0.9, 8), ("Invert", 0.7, None)),
        (("Equalize", 0.6, None), ("Solarize", 0.6, 6)),
        (("Invert", 0.9, None), ("Equalize", 0.6, None)),
        (("Equalize", 0.6, None), ("Rotate", 0.9, 3)),
        (("ShearX", 0.9, 4), ("AutoContrast", 0.8, None)),
        (("ShearY", 0.9, 8), ("Invert", 0.4, None)),
        (("ShearY", 0.9, 5), ("Solarize", 0.2, 6)),
        (("Invert", 0.9, None), ("AutoContrast", 0.8, None)),
        (("Equalize", 0.6, None), ("Rotate", 0.9, 3)),
        (("ShearX", 0.9, 4), ("Solarize", 0.3, 3)),
        (("ShearY", 0.8, 8), ("Invert", 0.7, None)),
        (("Equalize", 0.9, None), ("TranslateY", 0.6, 6)),
        (("Invert", 0.9, None), ("Equalize", 0.6, None)),
        (("Contrast", 0.3, 3), ("Rotate", 0.8, 4)),
        (("Invert", 0.8, None), ("TranslateY", 0.0, 2)),
        (("ShearY", 0.7, 6), ("Solarize", 0.4, 8)),
        (("Invert", 0.6, None), ("Rotate", 0.8, 4)),
        (("ShearY", 0.3, 7), ("TranslateX", 0.9, 3)),
        (("ShearX", 0.1, 6), ("Invert", 0.6, None)),
        (("Solarize", 0.7, 2), ("TranslateY", 0.6, 7)),
        (("ShearY", 0.8, 4), ("Invert", 0.8, None)),
        (("ShearX", 0.7, 9), ("TranslateY", 0.8, 3)),
        (("ShearY", 0.8, 5), ("AutoContrast", 0.7, None)),
        (("ShearX", 0.7, 2), ("Invert", 0.1, None)),
    ],
}
