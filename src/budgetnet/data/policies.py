"""The recipe's augment list, typed: one record per policy with its parameters, defaults and checks; no torch, so
that a recipe is checked without loading the augmentation ops (data/augment builds the ops from these records).

    policies = parse_augment([{"name": "crop", "padding": 4}, {"name": "flip"}])   # [Crop(padding=4, ...), Flip(...)]
    check_augment(policies)                                                          # UsageError on any mistake
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError, did_you_mean, shown

JSD_LAMBDA = 12.0  # AugMix's weight of the JSD term in the training loss: the AugMix paper's and the study's
MAX_PIXELS = 64    # the most pixels of crop padding or of a cutout's side: twice a CIFAR image's
FLIP_MODES = ("random", "alternate")
INTERPOLATIONS = ("nearest", "bilinear")

POLICIES: dict[str, type[PolicyConfig]] = {}


def register(cls: type[PolicyConfig]) -> type[PolicyConfig]:
    """Class decorator: make a policy record selectable in a recipe's augment list by its `name`."""
    POLICIES[cls.name] = cls
    return cls


def check(condition: bool, policy: str, message: str) -> None:
    """Raise UsageError(f"augment policy {policy!r}: {message}") unless `condition`."""
    if not condition:
        raise UsageError(f"augment policy {policy!r}: {message}")


def check_int(value: object, lo: int, hi: int, policy: str, key: str) -> None:
    """Raise UsageError unless parameter `key` of `policy` is an int in [lo, hi] (every int parameter has a range, so
    that no value reaches torch's int64 arguments out of theirs)."""
    check(isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi, policy,
          f"{key} must be an int in [{lo}, {hi}], got {shown(value)}")


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_probability(value: object, policy: str, key: str) -> None:
    check(_number(value) and 0 <= value <= 1, policy, f"{key} must be in [0, 1], got {shown(value)}")


def check_interpolation(policy: str, interpolation: object) -> None:
    check(interpolation in INTERPOLATIONS, policy,
          f"interpolation must be 'nearest' or 'bilinear', got {shown(interpolation)}")


@dataclass
class PolicyConfig:
    """One entry of a recipe's augment list: the policy's `name` and its parameters (the record's other fields)."""
    name: str = field(default="", init=False)
    mixes_labels = False  # mixup, cutmix: the targets become soft labels [B, num_classes]
    rounds_to_uint8 = False  # the op policies (autoaugment ... augmix): they work on uint8 images

    def validate(self) -> None:
        """Raise UsageError naming the first parameter out of its range."""

    def to_dict(self) -> dict[str, Any]:
        """The recipe entry, e.g. {"name": "crop", "padding": 4, "padding_mode": "zero"}."""
        return dataclasses.asdict(self)


@register
@dataclass
class Crop(PolicyConfig):
    """Random crop of the original size from the image padded by `padding` pixels (zero or reflect)."""
    name: str = field(default="crop", init=False)
    padding: int = 4
    padding_mode: str = "zero"

    def validate(self) -> None:
        check_int(self.padding, 0, MAX_PIXELS, "crop", "padding")
        check(self.padding_mode in ("zero", "reflect"), "crop",
              f"padding_mode must be 'zero' or 'reflect', got {shown(self.padding_mode)}")


@register
@dataclass
class Flip(PolicyConfig):
    """Horizontal flip with probability `p`, then vertical flip with probability `vertical_p`, per image; mode
    'alternate' (airbench's) flips each image in every other epoch instead (`p` is not used) and must come first."""
    name: str = field(default="flip", init=False)
    p: float = 0.5
    vertical_p: float = 0.0
    mode: str = "random"

    def validate(self) -> None:
        check_probability(self.p, "flip", "p")
        check_probability(self.vertical_p, "flip", "vertical_p")
        check(self.mode in FLIP_MODES, "flip", f"mode must be one of {', '.join(FLIP_MODES)}, got {shown(self.mode)}")


@register
@dataclass
class Translate(PolicyConfig):
    """Shift by whole pixels, up to `max_fraction` of the size per axis, zero fill."""
    name: str = field(default="translate", init=False)
    max_fraction: float = 0.125

    def validate(self) -> None:
        check_probability(self.max_fraction, "translate", "max_fraction")


@register
@dataclass
class Cutout(PolicyConfig):
    """Zero a `size` x `size` square centred anywhere in the image (clipped at the edges), with probability p."""
    name: str = field(default="cutout", init=False)
    size: int = 16
    p: float = 1.0

    def validate(self) -> None:
        check_int(self.size, 0, MAX_PIXELS, "cutout", "size")
        check_probability(self.p, "cutout", "p")


@register
@dataclass
class BrightnessContrast(PolicyConfig):
    """hiverge's brightness and contrast jitter of the standardised pixels, per image: (z + b) * c with
    b ~ U(±brightness) and c ~ U(1 ± contrast); it leaves [0, 1], so it comes after the op policies."""
    name: str = field(default="brightness_contrast", init=False)
    brightness: float = 0.1399
    contrast: float = 0.1308

    def validate(self) -> None:
        check(_number(self.brightness) and self.brightness >= 0, "brightness_contrast",
              f"brightness must be >= 0 (standard deviations), got {shown(self.brightness)}")
        check(_number(self.contrast) and 0 <= self.contrast < 1, "brightness_contrast",
              f"contrast must be in [0, 1) (a scale of 1 - contrast to 1 + contrast), got {shown(self.contrast)}")


@register
@dataclass
class AutoAugment(PolicyConfig):
    """AutoAugment: one of the learned sub-policies per image, each two ops applied with their probabilities."""
    name: str = field(default="autoaugment", init=False)
    policy: str = "cifar10"
    interpolation: str = "nearest"
    rounds_to_uint8 = True

    def validate(self) -> None:
        check(self.policy in ("cifar10", "imagenet", "svhn"), "autoaugment",
              f"policy must be 'cifar10', 'imagenet' or 'svhn', got {shown(self.policy)}")
        check_interpolation("autoaugment", self.interpolation)


@register
@dataclass
class RandAugment(PolicyConfig):
    """RandAugment: `num_ops` ops drawn uniformly per image, all at magnitude bin `magnitude`."""
    name: str = field(default="randaugment", init=False)
    num_ops: int = 2
    magnitude: int = 9
    num_magnitude_bins: int = 31
    interpolation: str = "nearest"
    rounds_to_uint8 = True

    def validate(self) -> None:
        check_int(self.num_ops, 0, 100, "randaugment", "num_ops")
        check_int(self.num_magnitude_bins, 2, 1000, "randaugment", "num_magnitude_bins")
        check_int(self.magnitude, 0, self.num_magnitude_bins - 1, "randaugment", "magnitude")
        check_interpolation("randaugment", self.interpolation)


@register
@dataclass
class TrivialAugment(PolicyConfig):
    """TrivialAugment (wide space): one op per image at a uniformly drawn magnitude bin."""
    name: str = field(default="trivialaugment", init=False)
    num_magnitude_bins: int = 31
    interpolation: str = "nearest"
    rounds_to_uint8 = True

    def validate(self) -> None:
        check_int(self.num_magnitude_bins, 2, 1000, "trivialaugment", "num_magnitude_bins")
        check_interpolation("trivialaugment", self.interpolation)


@register
@dataclass
class AugMix(PolicyConfig):
    """AugMix: a convex mix of the image and `mixture_width` chains of 1-3 (or `chain_depth`) random ops, with the
    AugMix paper's ops and levels (magnitudes: paper) or torchvision's; jsd: true adds two AugMix views to the clean
    one and jsd_lambda x their Jensen-Shannon consistency to the loss."""
    name: str = field(default="augmix", init=False)
    severity: int = 3
    mixture_width: int = 3
    chain_depth: int = -1
    alpha: float = 1.0
    all_ops: bool = True
    magnitudes: str = "paper"
    jsd: bool = False
    jsd_lambda: float = JSD_LAMBDA
    interpolation: str = "bilinear"
    rounds_to_uint8 = True

    @property
    def num_views(self) -> int:
        return 3 if self.jsd else 1

    def validate(self) -> None:
        check_int(self.severity, 1, 10, "augmix", "severity")
        check_int(self.mixture_width, 1, 100, "augmix", "mixture_width")
        check_int(self.chain_depth, -1, 100, "augmix", "chain_depth")
        check(self.chain_depth != 0, "augmix", "chain_depth must be -1 (random in [1, 3]) or 1 or more, got 0")
        check(_number(self.alpha) and self.alpha > 0, "augmix", f"alpha must be > 0, got {shown(self.alpha)}")
        check(isinstance(self.all_ops, bool), "augmix", f"all_ops must be true or false, got {shown(self.all_ops)}")
        check(self.magnitudes in ("paper", "torchvision"), "augmix",
              f"magnitudes must be 'paper' (the AugMix paper's augmentations.py) or 'torchvision', "
              f"got {shown(self.magnitudes)}")
        check(isinstance(self.jsd, bool), "augmix", f"jsd must be true or false, got {shown(self.jsd)}")
        check(_number(self.jsd_lambda) and self.jsd_lambda >= 0, "augmix",
              f"jsd_lambda must be >= 0, got {shown(self.jsd_lambda)}")
        check_interpolation("augmix", self.interpolation)
        check(self.magnitudes == "torchvision" or self.interpolation == "bilinear", "augmix",
              f"interpolation {self.interpolation!r} needs magnitudes: torchvision (the paper's ops resample "
              "bilinearly, as PIL)")


@dataclass
class LabelMixing(PolicyConfig):
    """The parameters mixup and cutmix share: the Beta(alpha, alpha) of the mixing ratio and the probability p of
    mixing a batch."""
    alpha: float = 1.0
    p: float = 1.0
    mixes_labels = True

    def validate(self) -> None:
        check(_number(self.alpha) and self.alpha > 0, self.name, f"alpha must be > 0, got {shown(self.alpha)}")
        check_probability(self.p, self.name, "p")


@register
@dataclass
class Mixup(LabelMixing):
    """mixup (Zhang et al. 2018): each image mixed with its neighbour in the batch, ratio ~ Beta(alpha, alpha) per
    batch, with probability p."""
    name: str = field(default="mixup", init=False)


@register
@dataclass
class CutMix(LabelMixing):
    """CutMix (Yun et al. 2019): a box of area ~ (1 - Beta(alpha, alpha)) pasted from the neighbour, per batch,
    with probability p."""
    name: str = field(default="cutmix", init=False)


def parse_policy(entry: object) -> PolicyConfig:
    """The record of one augment entry, e.g. {"name": "crop", "padding": 4}; UsageError for an unknown name or key
    (the values are checked by `validate`)."""
    if not isinstance(entry, dict) or "name" not in entry:
        raise UsageError(f"augment entry {shown(entry)} must be a mapping with a 'name' key")
    name, params = entry["name"], {k: v for k, v in entry.items() if k != "name"}
    if name not in POLICIES:
        raise UsageError(f"unknown augment policy {shown(name)}: valid names are {', '.join(sorted(POLICIES))}"
                         f"{did_you_mean(str(name), list(POLICIES))}")
    cls = POLICIES[name]
    valid = [f.name for f in dataclasses.fields(cls) if f.init]
    for key in params:
        if key not in valid:
            raise UsageError(f"augment policy {name!r} has no parameter {shown(key)}: valid keys are "
                             f"{', '.join(valid) or '(none)'}{did_you_mean(str(key), valid)}")
    return cls(**params)


def parse_augment(entries: list) -> list[PolicyConfig]:
    """The records of a recipe's augment list, in order (see parse_policy)."""
    return [parse_policy(entry) for entry in entries or []]


def check_augment(policies: list[PolicyConfig]) -> None:
    """Raise UsageError for the first policy with a value out of range, then for an order or combination that
    cannot run: two JSD AugMix policies, an alternating flip after another policy, a jitter before an op policy."""
    for policy in policies:
        policy.validate()
    if sum(isinstance(p, AugMix) and p.jsd for p in policies) > 1:
        raise UsageError("at most one augmix policy may have jsd: true (each would multiply the views by 3)")
    if any(isinstance(p, Flip) and p.mode == "alternate" for p in policies[1:]):
        raise UsageError("augment policy 'flip' with mode: alternate must come first (it keys each image by "
                         "its own pixels, which the policies before it would change)")
    jittered = [i for i, p in enumerate(policies) if isinstance(p, BrightnessContrast)]
    if jittered and any(p.rounds_to_uint8 for p in policies[jittered[0]:]):
        raise UsageError("augment policy 'brightness_contrast' must come after autoaugment, randaugment, "
                         "trivialaugment and augmix (they round images to uint8; its values leave [0, 1])")

