"""The AugMix paper's operations, batched: google-research/augmix `augmentations.py`, which runs them on PIL images.

augmentations.py draws each op's level uniformly from [0.1, severity) at every application (`sample_level`) and
maps it to the op's parameter with float_parameter(level, maxval) = level * maxval / 10 or
int_parameter(level, maxval) = int(level * maxval / 10):

    AutoContrast, Equalize           PIL's ImageOps
    Posterize                        4 - int(level * 4 / 10) bits
    Solarize                         invert the levels >= 256 - int(level * 256 / 10) (256: none)
    Rotate                           +-int(level * 30 / 10) degrees about the centre
    ShearX, ShearY                   +-level * 0.3 / 10, about the top-left corner
    TranslateX, TranslateY           +-int(level * (size / 3) / 10) pixels (the paper's size: 32)
    Color, Contrast, Brightness,     PIL's ImageEnhance by the factor 0.1 + level * 1.8 / 10 (towards the
    Sharpness                        degenerate image below 1)

The geometric ops resample bilinearly as PIL does. Each op here takes the level per image, negated for the ops
whose direction the paper draws at random, and computes what PIL computes with the same integer, float32 and
float64 arithmetic, so that it equals PIL image by image (tests/test_augmix_paper.py compares each op with PIL),
except that rotations interpolate in float32 (see the geometric ops). Each op runs once on all the images that
drew it.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import NamedTuple

import torch
from torch import Tensor

from . import ops

ALL_OPS = ["AutoContrast", "Equalize", "Posterize", "Rotate", "Solarize", "ShearX", "ShearY", "TranslateX",
           "TranslateY", "Color", "Contrast", "Brightness", "Sharpness"]  # augmentations_all, in its order
OPS = ALL_OPS[:9]  # augmentations: without the four the paper marks as overlapping with ImageNet-C
SIGNED = ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY")


def _divide(numerator: Tensor, denominator: float) -> Tensor:
    """numerator / denominator rounded once, as Python divides floats (on CUDA, dividing by a Python number
    multiplies by its reciprocal: two roundings)."""
    return numerator / torch.full_like(numerator, denominator)


def _float_parameter(level: Tensor, maxval: float) -> Tensor:
    return _divide(level * maxval, 10)


def _int_parameter(level: Tensor, maxval: float) -> Tensor:
    return _divide(level * maxval, 10).trunc()  # Python's int() truncates towards zero, also below zero


def _per_sample(values: Tensor) -> Tensor:
    return values.view(-1, 1, 1, 1)


# ---- pixel ops: uint8 images [n, 3, H, W] and levels [n] -> uint8 images

def _blend(degenerate: Tensor, images: Tensor, level: Tensor) -> Tensor:
    """ImageEnhance's enhance(0.1 + level * 1.8 / 10): PIL's blend, degenerate + factor * (image - degenerate)
    in float32 (factor rounded to float32 as PIL passes it to C), clipped to [0, 255] and truncated."""
    factor = _per_sample((_float_parameter(level, 1.8) + 0.1).float())
    degenerate = degenerate.float()
    return (images.float() - degenerate).mul_(factor).add_(degenerate).clamp_(0, 255).to(torch.uint8)


def _luma(images: Tensor) -> Tensor:
    """PIL's convert("L"), [n, 1, H, W] int32: (19595 R + 38470 G + 7471 B + 2^15) >> 16 (ITU-R 601-2)."""
    r, g, b = images.int().unbind(dim=1)
    return (r * 19595 + g * 38470 + b * 7471 + 0x8000).bitwise_right_shift_(16).unsqueeze(1)


def autocontrast(images: Tensor, level: Tensor) -> Tensor:
    """ImageOps.autocontrast: per channel, the lookup table int(v * scale + offset) with scale 255 / (hi - lo) and
    offset -lo * scale in float64 (torchvision's float32 (v - lo) * scale truncates 1.4% of CIFAR's levels one
    lower); a channel of one level is left as it is."""
    flat = images.reshape(*images.shape[:2], -1)
    lo, hi = flat.amin(dim=2).double().unsqueeze(2), flat.amax(dim=2).double().unsqueeze(2)  # [n, 3, 1]
    scale = torch.full_like(hi, 255.0) / (hi - lo)  # not 255.0 / (hi - lo): torch multiplies by a reciprocal
    levels = torch.arange(256, dtype=torch.float64, device=images.device)
    lut = (levels * scale + -lo * scale).trunc_().clamp_(0, 255)
    lut = torch.where(hi > lo, lut, levels).to(torch.uint8)  # [n, 3, 256]
    return lut.gather(2, flat.long()).view_as(images)


def equalize(images: Tensor, level: Tensor) -> Tensor:
    """ImageOps.equalize, which torchvision's equalize reproduces exactly."""
    import torchvision.transforms.v2.functional as TF  # torchvision when an image is transformed, not when checked

    return TF.equalize(images)


def posterize(images: Tensor, level: Tensor) -> Tensor:
    return ops.posterize(images, 4 - _int_parameter(level, 4))


def solarize(images: Tensor, level: Tensor) -> Tensor:
    """ImageOps.solarize at threshold 256 - int(level * 256 / 10) in [1, 256]: levels >= threshold inverted."""
    below = _per_sample(255 - _int_parameter(level, 256)).to(torch.uint8)  # threshold - 1, fits in uint8
    return images ^ (images > below).to(torch.uint8).mul_(255)  # x ^ 255 == 255 - x


def color(images: Tensor, level: Tensor) -> Tensor:
    """ImageEnhance.Color: blend with the L (grey) image."""
    return _blend(_luma(images), images, level)


def contrast(images: Tensor, level: Tensor) -> Tensor:
    """ImageEnhance.Contrast: blend with the uniform image of int(mean of L + 0.5)."""
    luma = _luma(images)
    mean = _divide(luma.sum(dim=(1, 2, 3), dtype=torch.int64).double(), luma[0].numel())
    return _blend(_per_sample(mean.add_(0.5).floor_()), images, level)


def brightness(images: Tensor, level: Tensor) -> Tensor:
    """ImageEnhance.Brightness: blend with black."""
    return _blend(images.new_zeros(()), images, level)


def sharpness(images: Tensor, level: Tensor) -> Tensor:
    """ImageEnhance.Sharpness: blend with PIL's SMOOTH filter, which keeps the border pixels."""
    degenerate = images.clone()
    degenerate[..., 1:-1, 1:-1] = ops.smooth(images)
    return _blend(degenerate, images, level)


# ---- geometric ops: uint8 images [n, 3, H, W] and signed levels [n] -> uint8 images
#
# PIL's bilinear Image.transform(AFFINE) samples output pixel (x, y) at (u, v) = matrix @ (x + 0.5, y + 0.5, 1),
# in float64. Points outside [0, W) x [0, H) are black; inside, the four neighbours of (u - 0.5, v - 0.5), clamped
# to the image (the outer half pixel repeats the edge), are interpolated as a + (b - a) * t along x, then along y,
# and the result truncated to uint8. Each op below computes the sampling points as PIL does, in float64, for the
# matrices it draws: a translation by whole pixels samples no fraction (a shift), a shear interpolates along one
# axis only (in float64: equal to PIL), a rotation is by whole degrees (a table of 61) and interpolates in float32
# (4x faster than float64; it truncates differently only where PIL's a + (b - a) * t lies within ~1e-5 of a whole
# level: 1 value in ~100,000 of CIFAR-10's, by 1 level).

def _shift(images: Tensor, offset: Tensor, dim: int) -> Tensor:
    """Output index i along `dim` takes input index i + offset (whole pixels, per image); outside: black."""
    size = images.shape[dim]
    source = torch.arange(size, device=images.device) + offset.long().view(-1, 1)  # [n, size]
    shape = [len(images), 1, 1, 1]
    shape[dim] = size
    inside = ((source >= 0) & (source < size)).view(shape)
    return images.gather(dim, source.clamp_(0, size - 1).view(shape).expand_as(images)).mul_(inside)


def _lerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """PIL's BILINEAR: a + (b - a) * t, in the dtype of t."""
    a = a.to(t.dtype)
    return (b - a).mul_(t).add_(a)


def _shear_x(images: Tensor, shear: Tensor) -> Tensor:
    """PIL's transform by (1, shear, 0, 0, 1, 0): row y samples at u = (x + 0.5) + shear * (y + 0.5); v is the row's
    centre, so PIL's interpolation along y has weight 0."""
    n, _, h, w = images.shape
    x = torch.arange(w, dtype=torch.float64, device=images.device).add_(0.5)
    y = torch.arange(h, dtype=torch.float64, device=images.device).add_(0.5)
    u = x.view(1, 1, w) + shear.view(n, 1, 1) * y.view(1, h, 1)  # [n, h, w]
    inside = (u >= 0) & (u < w)
    u = u.sub_(0.5)
    left = u.floor()
    t = u.sub_(left)
    index = lambda k: (left.long() + k).clamp_(0, w - 1).unsqueeze(1).expand_as(images)  # noqa: E731
    out = _lerp(images.gather(3, index(0)), images.gather(3, index(1)), t.unsqueeze(1))
    return out.mul_(inside.unsqueeze(1)).to(torch.uint8)


def shear_x(images: Tensor, level: Tensor) -> Tensor:
    return _shear_x(images, _float_parameter(level, 0.3))


def shear_y(images: Tensor, level: Tensor) -> Tensor:
    """PIL's transform by (1, 0, 0, shear, 1, 0): ShearX of the transposed image (v = shear * (x + 0.5) + (y + 0.5)
    is the same sum); gathering along contiguous rows is the faster."""
    transposed = images.transpose(2, 3).contiguous()
    return _shear_x(transposed, _float_parameter(level, 0.3)).transpose(2, 3)


def translate_x(images: Tensor, level: Tensor) -> Tensor:
    """PIL's transform by (1, 0, c, 0, 1, 0), c = int(level * (W / 3) / 10): samples at whole pixels."""
    return _shift(images, _int_parameter(level, images.shape[-1] / 3), dim=-1)


def translate_y(images: Tensor, level: Tensor) -> Tensor:
    return _shift(images, _int_parameter(level, images.shape[-2] / 3), dim=-2)


class _Samples(NamedTuple):
    """Where PIL's bilinear transform samples: per output pixel, the flat indices of the four neighbours
    [..., 4, H * W] (top-left, top-right, bottom-left, bottom-right), the weights along x and y [..., H * W]
    (float32) and whether the point is inside the image [..., H * W]."""
    index: Tensor
    tx: Tensor
    ty: Tensor
    inside: Tensor


def _bilinear_samples(matrices: Tensor, height: int, width: int) -> _Samples:
    """PIL's sampling points of the affine transforms `matrices` [k, 2, 3] (float64), in its arithmetic."""
    m = matrices.view(-1, 6, 1, 1).unbind(dim=1)  # each [k, 1, 1]
    x = torch.arange(width, dtype=torch.float64, device=matrices.device).add_(0.5).view(1, 1, width)
    y = torch.arange(height, dtype=torch.float64, device=matrices.device).add_(0.5).view(1, height, 1)
    u = (m[0] * x + m[1] * y + m[2]).flatten(1)  # in the order of PIL's sums, [k, H * W]
    v = (m[3] * x + m[4] * y + m[5]).flatten(1)
    inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
    u, v = u - 0.5, v - 0.5
    u0, v0 = u.floor(), v.floor()
    columns = [c.long().clamp_(0, width - 1) for c in (u0, u0 + 1)]
    rows = [r.long().clamp_(0, height - 1) * width for r in (v0, v0 + 1)]
    index = torch.stack([rows[0] + columns[0], rows[0] + columns[1], rows[1] + columns[0], rows[1] + columns[1]], 1)
    return _Samples(index, (u - u0).float(), (v - v0).float(), inside)


@lru_cache(maxsize=None)
def _rotations(height: int, width: int, device: torch.device) -> _Samples:
    """Image.rotate's sampling points for the whole angles -30..30 degrees (its matrices, Python's round), [61, ...]
    on `device`."""
    cx, cy = width / 2, height / 2
    matrices = []
    for degrees in range(-30, 31):
        angle = -math.radians(degrees % 360.0)
        a, b, d, e = (round(math.cos(angle), 15), round(math.sin(angle), 15), round(-math.sin(angle), 15),
                      round(math.cos(angle), 15))
        matrices.append([a, b, a * -cx + b * -cy + cx, d, e, d * -cx + e * -cy + cy])
    samples = _bilinear_samples(torch.tensor(matrices, dtype=torch.float64), height, width)
    return _Samples(*(t.to(device) for t in samples))


def _resample(images: Tensor, samples: _Samples) -> Tensor:
    """PIL's bilinear transform of each image [n, C, H, W] at its sampling points (`_Samples` with leading dim n)."""
    n, channels, h, w = images.shape
    corners = images.reshape(n, channels, h * w).gather(2, samples.index.view(n, 1, 4 * h * w).expand(
        n, channels, 4 * h * w)).view(n, channels, 2, 2, h * w).float()  # [n, C, top/bottom, left/right, H * W]
    along_x = _lerp(corners[:, :, :, 0], corners[:, :, :, 1], samples.tx.view(n, 1, 1, h * w))
    out = _lerp(along_x[:, :, 0], along_x[:, :, 1], samples.ty.view(n, 1, h * w))
    return out.mul_(samples.inside.view(n, 1, h * w)).to(torch.uint8).view_as(images)


def rotate(images: Tensor, level: Tensor) -> Tensor:
    """Counter-clockwise by int(level * 30 / 10) degrees (whole, |.| <= 29 for severity <= 10) about the centre."""
    degrees = _int_parameter(level, 30).long().clamp_(-30, 30)
    table = _rotations(*images.shape[-2:], images.device)
    return _resample(images, _Samples(*(t[degrees + 30] for t in table)))


PAPER = ops.OpSet(
    pixel={"AutoContrast": autocontrast, "Equalize": equalize, "Posterize": posterize, "Solarize": solarize,
           "Color": color, "Contrast": contrast, "Brightness": brightness, "Sharpness": sharpness},
    geometric={"Rotate": rotate, "ShearX": shear_x, "ShearY": shear_y, "TranslateX": translate_x,
               "TranslateY": translate_y},
    warp=None)  # each geometric op resamples its own group, as PIL does for the matrices it draws


class PaperSpace:
    """The paper's op list (`augmentations_all`, or `augmentations` without the colour ops) and its levels."""
    ops = PAPER

    def __init__(self, all_ops: bool) -> None:
        self.names = list(ALL_OPS if all_ops else OPS)
        self.signed = torch.tensor([name in SIGNED for name in self.names])

    def level(self, op: Tensor, severity: int) -> Tensor:
        """Each image's level for op `op` [n]: uniform on [0.1, severity) in float64 (numpy's uniform, as
        `sample_level`), negated with probability 1/2 for the signed ops."""
        level = torch.rand(op.shape, dtype=torch.float64, device=op.device).mul_(severity - 0.1).add_(0.1)
        negate = self.signed.to(op.device)[op.clamp(min=0)] & (torch.rand(op.shape, device=op.device) < 0.5)
        return torch.where(negate, -level, level)
