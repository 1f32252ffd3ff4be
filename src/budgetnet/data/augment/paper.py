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
float64 arithmetic, so that it equals PIL image by image (tests/test_augmix_paper.py compares each op with PIL).
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch
import torchvision.transforms.v2.functional as TF
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


# ---- geometric ops: levels [n] -> PIL's affine matrices [n, 2, 3] float64, from output to input coordinates

def _matrices(level: Tensor, a: Tensor | float, b: Tensor | float, c: Tensor | float,
              d: Tensor | float, e: Tensor | float, f: Tensor | float) -> Tensor:
    """Stack PIL's affine data (a, b, c, d, e, f), each a number or one value per image, into [n, 2, 3]."""
    values = [v if isinstance(v, Tensor) else torch.full_like(level, v) for v in (a, b, c, d, e, f)]
    return torch.stack(values, dim=1).view(-1, 2, 3)


def shear_x(level: Tensor, height: int, width: int) -> Tensor:
    return _matrices(level, 1.0, _float_parameter(level, 0.3), 0.0, 0.0, 1.0, 0.0)


def shear_y(level: Tensor, height: int, width: int) -> Tensor:
    return _matrices(level, 1.0, 0.0, 0.0, _float_parameter(level, 0.3), 1.0, 0.0)


def translate_x(level: Tensor, height: int, width: int) -> Tensor:
    return _matrices(level, 1.0, 0.0, _int_parameter(level, width / 3), 0.0, 1.0, 0.0)


def translate_y(level: Tensor, height: int, width: int) -> Tensor:
    return _matrices(level, 1.0, 0.0, 0.0, 0.0, 1.0, _int_parameter(level, height / 3))


@lru_cache(maxsize=None)
def _rotations(height: int, width: int) -> Tensor:
    """Image.rotate's matrices for the whole angles -30..30 degrees (its arithmetic, Python's round), [61, 2, 3]."""
    cx, cy = width / 2, height / 2
    matrices = []
    for degrees in range(-30, 31):
        angle = -math.radians(degrees % 360.0)
        a, b, d, e = (round(math.cos(angle), 15), round(math.sin(angle), 15), round(-math.sin(angle), 15),
                      round(math.cos(angle), 15))
        matrices.append([a, b, a * -cx + b * -cy + cx, d, e, d * -cx + e * -cy + cy])
    return torch.tensor(matrices, dtype=torch.float64).view(-1, 2, 3)


def rotate(level: Tensor, height: int, width: int) -> Tensor:
    """Counter-clockwise by int(level * 30 / 10) degrees (whole, |.| <= 29 for severity <= 10)."""
    degrees = _int_parameter(level, 30).long().clamp_(-30, 30)
    return ops.to_device(_rotations(height, width), level.device)[degrees + 30]


def warp(images: Tensor, matrices: Tensor, interpolation: str) -> Tensor:
    """PIL's bilinear Image.transform(AFFINE) of each image by its matrix [n, 2, 3], in float64 as PIL.

    Output pixel (x, y) samples the input at (u, v) = matrix @ (x + 0.5, y + 0.5, 1). Points outside
    [0, W) x [0, H) are black; inside, the four neighbours of (u - 0.5, v - 0.5), clamped to the image (the
    outer half pixel repeats the edge), are interpolated as a + (b - a) * t along x, then along y, and the
    result truncated to uint8.
    """
    if interpolation != "bilinear":
        raise ValueError(f"the AugMix paper's ops resample bilinearly, got interpolation {interpolation!r}")
    n, channels, h, w = images.shape
    m = matrices.view(n, 6, 1, 1).unbind(dim=1)  # each [n, 1, 1]
    x = torch.arange(w, dtype=torch.float64, device=images.device).add_(0.5).view(1, 1, w)
    y = torch.arange(h, dtype=torch.float64, device=images.device).add_(0.5).view(1, h, 1)
    u = (m[0] * x + m[1] * y + m[2]).view(n, 1, 1, -1)  # in the order of PIL's sums
    v = (m[3] * x + m[4] * y + m[5]).view(n, 1, 1, -1)
    outside = (u < 0) | (u >= w) | (v < 0) | (v >= h)
    u, v = u - 0.5, v - 0.5
    u0, v0 = u.floor(), v.floor()
    du, dv = u - u0, (v - v0).squeeze(2)
    columns = torch.cat([u0, u0 + 1]).long().clamp_(0, w - 1)  # [2n, 1, 1, h * w]: left, right
    rows = torch.cat([v0, v0 + 1]).long().clamp_(0, h - 1)  # top, bottom
    index = torch.cat([rows[:n] * w + columns[:n], rows[:n] * w + columns[n:],
                       rows[n:] * w + columns[:n], rows[n:] * w + columns[n:]], dim=2)  # [n, 1, 4, h * w]
    corners = images.reshape(n, channels, 1, h * w).expand(n, channels, 4, h * w).gather(
        3, index.expand(n, channels, 4, h * w)).double()  # top-left, top-right, bottom-left, bottom-right
    left, right = corners[:, :, 0::2], corners[:, :, 1::2]  # [n, channels, 2 (top, bottom), h * w]
    along_x = right.sub_(left).mul_(du).add_(left)
    top, bottom = along_x.unbind(dim=2)
    out = bottom.sub_(top).mul_(dv).add_(top).trunc_().masked_fill_(outside.view(n, 1, -1), 0)
    return out.to(torch.uint8).view_as(images)


PAPER = ops.OpSet(
    pixel={"AutoContrast": autocontrast, "Equalize": equalize, "Posterize": posterize, "Solarize": solarize,
           "Color": color, "Contrast": contrast, "Brightness": brightness, "Sharpness": sharpness},
    geometric={"Rotate": rotate, "ShearX": shear_x, "ShearY": shear_y, "TranslateX": translate_x,
               "TranslateY": translate_y},
    warp=warp)


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
