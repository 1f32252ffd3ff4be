"""Label-mixing policies: mixup and cutmix, each image paired with its neighbour in the batch (as torchvision's
MixUp and CutMix: the batch rolled by one), one mixing ratio per batch, applied with probability p. The per-batch
draws come from the CPU's RNG, so that using them never waits for the GPU.

Targets are soft labels [B, K]. With several views (AugMix JSD) every view is mixed with the same pairs and ratio.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .. import policies
from .registry import Policy, register


def _beta(alpha: float) -> float:
    """One draw of Beta(alpha, alpha) from the global torch RNG (the CPU's: reading it back costs no device sync)."""
    concentration = torch.tensor(float(alpha))
    return float(torch.distributions.Beta(concentration, concentration).sample())


def _neighbours(images: Tensor, targets: Tensor) -> Tensor:
    """Each image's partner: the previous image of the same view (the batch rolled by one within each view)."""
    views = images.shape[0] // targets.shape[0]
    return images.view(views, targets.shape[0], *images.shape[1:]).roll(1, 1).view_as(images)


def mixup(images: Tensor, targets: Tensor, lam: float) -> tuple[Tensor, Tensor]:
    """lam * each image + (1 - lam) * its neighbour; the same for the soft targets."""
    images = images.float().div_(255) if images.dtype == torch.uint8 else images
    return (images * lam).add_(_neighbours(images, targets), alpha=1 - lam), \
        (targets * lam).add_(targets.roll(1, 0), alpha=1 - lam)


def cutmix(images: Tensor, targets: Tensor, box: tuple[int, int, int, int]) -> tuple[Tensor, Tensor]:
    """Paste the box (x1, y1, x2, y2) of each image's neighbour; targets mixed by the pasted area."""
    x1, y1, x2, y2 = box
    h, w = images.shape[-2:]
    out = images.clone()
    out[..., y1:y2, x1:x2] = _neighbours(images, targets)[..., y1:y2, x1:x2]
    lam = 1.0 - (x2 - x1) * (y2 - y1) / (w * h)
    return out, (targets * lam).add_(targets.roll(1, 0), alpha=1 - lam)


@register(policies.Mixup)
class Mixup(policies.Mixup, Policy):
    """mixup (Zhang et al. 2018): ratio ~ Beta(alpha, alpha) per batch."""

    def __call__(self, images: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        if torch.rand(()) >= self.p:
            return images, targets
        return mixup(images, targets, _beta(self.alpha))


@register(policies.CutMix)
class CutMix(policies.CutMix, Policy):
    """CutMix (Yun et al. 2019): a box of area ~ (1 - Beta(alpha, alpha)) centred uniformly, per batch."""

    def __call__(self, images: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        if torch.rand(()) >= self.p:
            return images, targets
        h, w = images.shape[-2:]
        lam = _beta(self.alpha)
        cx, cy = int(torch.randint(w, ())), int(torch.randint(h, ()))
        half = 0.5 * (1.0 - lam) ** 0.5
        half_w, half_h = int(half * w), int(half * h)
        box = (max(cx - half_w, 0), max(cy - half_h, 0), min(cx + half_w, w), min(cy + half_h, h))
        return cutmix(images, targets, box)
