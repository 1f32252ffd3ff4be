"""Batched, device-agnostic data augmentation for the training loop.

    augment = build_augment(recipe.augment, num_classes=10)  # the recipe's policy records (data.policies)
    views, targets = augment(images_uint8, labels)           # views float [V*B, 3, H, W] in [0, 1]

Policies run in the recipe's order on the whole batch with per-sample random choices, from the global torch RNG
(torch.manual_seed reproduces a run; the training loop reseeds it every epoch from seed, epoch and rank, so a
resumed run draws what an uninterrupted one would). No policy reads a value back
from the images' device: choices that decide shapes or Python control flow (op groups, mix ratios, boxes) are
drawn on the CPU, so the host never waits for the GPU. A recipe names them:

    crop            padding=4, padding_mode=zero|reflect         random crop of the padded image
    flip            p=0.5, vertical_p=0.0, mode=random|alternate horizontal, then vertical flip (alternate:
                                                                 each image every other epoch, airbench)
    translate       max_fraction=0.125                           integer shift, zero fill
    cutout          size=16, p=1.0                               zero a square (clipped at the edges)
    brightness_contrast  brightness=0.1399, contrast=0.1308  (hiverge's jitter of the standardised pixels, per
                    image; a little beyond [0, 1], not clipped: after the op policies)
    autoaugment     policy=cifar10|imagenet|svhn, interpolation=nearest
    randaugment     num_ops=2, magnitude=9, num_magnitude_bins=31, interpolation=nearest
    trivialaugment  num_magnitude_bins=31, interpolation=nearest  (TrivialAugmentWide)
    augmix          severity=3, mixture_width=3, chain_depth=-1, alpha=1.0, all_ops=true, magnitudes=paper|torchvision,
                    jsd=false, jsd_lambda=12.0, interpolation=bilinear  (jsd: clean view + 2 AugMix views)
    mixup           alpha=1.0, p=1.0                             soft targets [B, num_classes]
    cutmix          alpha=1.0, p=1.0                             soft targets [B, num_classes]

The auto-augment ops and magnitudes are torchvision.transforms.v2's (each op equals torchvision's on uint8 images),
except AugMix's with magnitudes: paper (the default): the AugMix paper's augmentations.py, each op equal to PIL's.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..policies import JSD_LAMBDA, AugMix, PolicyConfig, check_augment
from . import auto, basic, color, mix  # noqa: F401 (importing them registers their ops)
from .registry import Policy, build_policy

__all__ = ["Augment", "build_augment"]


class Augment:
    """A recipe's augment list, ready to apply to uint8 batches."""

    def __init__(self, policies: list[PolicyConfig], num_classes: int) -> None:
        check_augment(policies)
        self.policies: list[Policy] = [build_policy(config) for config in policies]
        self.num_classes = num_classes
        jsd = [p for p in policies if isinstance(p, AugMix) and p.jsd]
        self.num_views = 3 if jsd else 1
        self.jsd_lambda = float(jsd[0].jsd_lambda) if jsd else JSD_LAMBDA
        self.soft_targets = any(p.mixes_labels for p in policies)

    def set_epoch(self, epoch: int) -> None:
        """Tell the policies that depend on the epoch (flip with mode: alternate) which one is about to start."""
        for policy in self.policies:
            if hasattr(policy, "set_epoch"):
                policy.set_epoch(epoch)

    def __call__(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """uint8 images [B, 3, H, W] and int64 labels [B] -> views float32 [V*B, 3, H, W] in [0, 1] (a little
        beyond after brightness_contrast), view-major (clean view first), and targets: int64 [B], or float32
        [B, num_classes] with mixup or cutmix."""
        targets = F.one_hot(labels, self.num_classes).float() if self.soft_targets else labels
        for policy in self.policies:
            images, targets = policy(images, targets)
        views = images.float().div_(255) if images.dtype == torch.uint8 else images.float()
        return views, targets

    def __repr__(self) -> str:
        return f"Augment({self.policies}, num_views={self.num_views})"


def build_augment(policies: list[PolicyConfig], num_classes: int) -> Augment:
    """Check a recipe's augment list (data.policies.check_augment) and build its batched pipeline, in order;
    UsageError (a ValueError) on any mistake."""
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    return Augment(policies, num_classes)
