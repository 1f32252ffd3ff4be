"""Pixel-moving policies: random crop, flips, integer translation, cutout. Any dtype, per-sample randomness."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import policies
from .registry import Policy, register


def shift_crop(images: Tensor, dy: Tensor, dx: Tensor, padding: int, mode: str = "constant") -> Tensor:
    """Crop each padded image at offset (dy, dx) in [0, 2*padding]: a per-sample shift, one flat gather."""
    n, c, h, w = images.shape
    padded = F.pad(images, (padding,) * 4, mode=mode) if mode == "constant" else \
        F.pad(images.float(), (padding,) * 4, mode=mode).to(images.dtype)  # no reflect padding for uint8
    width = w + 2 * padding
    window = torch.arange(h, device=images.device)[:, None] * width + torch.arange(w, device=images.device)
    index = (dy * width + dx).view(n, 1, 1) + window.view(1, 1, h * w)
    return padded.view(n, c, -1).gather(2, index.expand(n, c, h * w)).view(n, c, h, w)


def _where(mask: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Per-image a if mask else b; exact for uint8 and float, and faster than torch.where on uint8 (CPU)."""
    m = mask.view(-1, 1, 1, 1).to(a.dtype)
    return a * m + b * (1 - m)


@register(policies.Crop)
class Crop(policies.Crop, Policy):
    """Random crop of the original size from the image padded by `padding` pixels (zero or reflect)."""

    def __call__(self, images: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        if self.padding == 0:
            return images, targets
        dy, dx = torch.randint(0, 2 * self.padding + 1, (2, images.shape[0]), device=images.device)
        mode = "constant" if self.padding_mode == "zero" else "reflect"
        return shift_crop(images, dy, dx, self.padding, mode), targets


@register(policies.Flip)
class Flip(policies.Flip, Policy):
    """Horizontal flip with probability `p`, then vertical flip with probability `vertical_p`, per image.

    mode 'alternate' (airbench's alternating flip) replaces the random horizontal flip (`p` is not used): each
    image is flipped in every other epoch, starting flipped or not by a fixed pseudo-random bit of its own, so that
    any two consecutive epochs show it once each way. The bit is a hash of the image's pixels and the epoch comes
    from `set_epoch` (the training loop calls it before each epoch), so a resumed run flips as an uninterrupted one
    would; the hash needs the dataset's own pixels, so an alternating flip must be the first policy.
    """
    _epoch = 0  # set by set_epoch; not a recipe key

    def set_epoch(self, epoch: int) -> None:
        """The epoch (0-based) about to be trained: alternating flips depend on it."""
        self._epoch = epoch

    def __call__(self, images: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        if self.mode == "alternate":
            flip = image_bits(images) ^ bool(self._epoch % 2)
        else:
            flip = torch.rand(images.shape[0], device=images.device) < self.p
        images = _where(flip, images.flip(-1), images)
        if self.vertical_p > 0:
            flip = torch.rand(images.shape[0], device=images.device) < self.vertical_p
            images = _where(flip, images.flip(-2), images)
        return images, targets


def image_bits(images: Tensor) -> Tensor:
    """A fixed pseudo-random bit per image (bool [N]): bit 20 of a weighted sum of its pixels (as 0-255 values)
    with fixed random weights, so an image gets the same bit in any batch, epoch or run."""
    n = images.shape[0]
    pixels = images.reshape(n, -1)
    pixels = pixels.long() if images.dtype == torch.uint8 else (pixels.float() * 255).round().long()
    weights = torch.randint(0, 2**31, (pixels.shape[1],), generator=torch.Generator().manual_seed(0))
    return ((pixels * weights.to(images.device)).sum(1) >> 20 & 1).bool()


@register(policies.Translate)
class Translate(policies.Translate, Policy):
    """Shift by whole pixels, up to `max_fraction` of the size per axis (as torchvision's RandomAffine
    translate, rounded), zero fill."""

    def __call__(self, images: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        n, _, h, w = images.shape
        limit = (self.max_fraction * h, self.max_fraction * w)
        pad = int(max(torch.tensor(limit).max().ceil().item(), 0))  # float32 as the shifts; on the CPU: no device sync
        u = torch.rand(2, n, device=images.device) * 2 - 1
        shift = torch.stack([u[0] * limit[0], u[1] * limit[1]]).round().long()  # dy, dx
        return shift_crop(images, pad - shift[0], pad - shift[1], pad), targets


@register(policies.Cutout)
class Cutout(policies.Cutout, Policy):
    """Zero a `size` x `size` square centred anywhere in the image (clipped at the edges), with probability p."""

    def __call__(self, images: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        n, _, h, w = images.shape
        device = images.device
        cy, cx = torch.randint(0, h, (n,), device=device), torch.randint(0, w, (n,), device=device)
        top, left = cy - self.size // 2, cx - self.size // 2
        ys, xs = torch.arange(h, device=device), torch.arange(w, device=device)
        inside_y = (ys >= top[:, None]) & (ys < top[:, None] + self.size)
        inside_x = (xs >= left[:, None]) & (xs < left[:, None] + self.size)
        apply = torch.rand(n, device=device) < self.p
        hole = (inside_y[:, :, None] & inside_x[:, None, :] & apply[:, None, None])[:, None]
        return images.masked_fill(hole, 0), targets
