"""Pixel-value policies: brightness and contrast jitter (hiverge/cifar10-speedrun's `batch_color_jitter`)."""
from __future__ import annotations

import torch
from torch import Tensor

from .. import policies
from ..schema import CHANNEL_MEAN, CHANNEL_STD
from .registry import Policy, register

# hiverge jitters images standardised by CIFAR-10's channel means and standard deviations (cifar10_speedrun.py:248-249)
MEAN = torch.tensor(CHANNEL_MEAN["cifar10"]).view(1, 3, 1, 1)
STD = torch.tensor(CHANNEL_STD["cifar10"]).view(1, 3, 1, 1)


@register(policies.BrightnessContrast)
class BrightnessContrast(policies.BrightnessContrast, Policy):
    """hiverge's brightness and contrast jitter: each image's standardised pixels z become (z + b) * c, with
    b ~ U(-brightness, brightness) and c ~ U(1 - contrast, 1 + contrast) drawn per image (one pair for all its
    channels and pixels; hiverge draws them once an epoch for every image, which is the same distribution).

    On images in [0, 1] (standardised by CIFAR-10's channel statistics, whatever the data set) that is
    c * x + (1 - c) * mean + c * std * b: a shift of up to `brightness` standard deviations and a contrast change
    about the data set's mean. The defaults are hiverge's. The result is float32 and, like hiverge's, not clipped
    (about [-0.11, 1.12] at the defaults), so the op policies, which round to uint8, must come before it.
    """

    def __call__(self, images: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        x = images.float().div_(255) if images.dtype == torch.uint8 else images.float()
        u = torch.rand(2, x.shape[0], 1, 1, 1, device=x.device) * 2 - 1
        shift, scale = u[0] * self.brightness, u[1] * self.contrast + 1
        mean, std = MEAN.to(x.device), STD.to(x.device)
        return x * scale + ((1 - scale) * mean + scale * std * shift), targets
