"""torchvision's image operations of AutoAugment, RandAugment, TrivialAugmentWide and AugMix, with per-sample
magnitudes, and apply_ops, which runs a batch through a family of ops (these, or paper.py's) one op at a time.

Each op maps uint8 images [n, 3, H, W] and magnitudes [n] (float64, as torchvision's auto-augment transforms
sample them) to uint8 images, and equals what torchvision.transforms.v2 does to each image with its magnitude
(`_AutoAugmentBase._apply_image_or_video_transform`): same formulas, same order of float32 operations.
Geometric ops also take the interpolation ('nearest' or 'bilinear') and fill with zeros.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


def _per_sample(values: Tensor) -> Tensor:
    """Magnitudes [n] -> float32 [n, 1, 1, 1], to broadcast over images."""
    return values.float().view(-1, 1, 1, 1)


def _inverse_affine(angle: Tensor, translate_x: Tensor, translate_y: Tensor, shear_x: Tensor, shear_y: Tensor,
                    center: tuple[float, float]) -> Tensor:
    """torchvision's `_get_inverse_affine_matrix` (scale 1) for per-sample angles and shears in degrees: [n, 2, 3]."""
    rot, sx, sy = angle * (math.pi / 180), shear_x * (math.pi / 180), shear_y * (math.pi / 180)
    cx, cy = center
    a = torch.cos(rot - sy) / torch.cos(sy)
    b = -torch.cos(rot - sy) * torch.tan(sx) / torch.cos(sy) - torch.sin(rot)
    c = torch.sin(rot - sy) / torch.cos(sy)
    d = -torch.sin(rot - sy) * torch.tan(sx) / torch.cos(sy) + torch.cos(rot)
    m0, m1, m3, m4 = d, -b, -c, a
    m2 = m0 * (-cx - translate_x) + m1 * (-cy - translate_y) + cx
    m5 = m3 * (-cx - translate_x) + m4 * (-cy - translate_y) + cy
    return torch.stack([m0, m1, m2, m3, m4, m5], dim=1).view(-1, 2, 3)


def _affine(images: Tensor, theta: Tensor, interpolation: str) -> Tensor:
    """Warp each image by its inverse matrix theta [n, 2, 3] as torchvision's affine_image does (one grid_sample)."""
    n, _, h, w = images.shape
    device = images.device
    xs = torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, steps=w, device=device).view(1, 1, w, 1)
    ys = torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, steps=h, device=device).view(1, h, 1, 1)
    theta = theta.float()
    theta = torch.cat([theta[:, :1] / (0.5 * w), theta[:, 1:] / (0.5 * h)], dim=1).view(n, 1, 1, 2, 3)
    grid = (xs * theta[..., 0] + ys * theta[..., 1]).add_(theta[..., 2])  # [n, h, w, 2]; bmm is slow here
    out = F.grid_sample(images.float(), grid, mode=interpolation, padding_mode="zeros", align_corners=False)
    return out.round_().to(torch.uint8)


def shear_x(magnitude: Tensor, height: int, width: int) -> Tensor:
    zero = torch.zeros_like(magnitude)
    shear = torch.rad2deg(torch.atan(magnitude))
    return _inverse_affine(zero, zero, zero, shear, zero, (-0.5 * width, -0.5 * height))


def shear_y(magnitude: Tensor, height: int, width: int) -> Tensor:
    zero = torch.zeros_like(magnitude)
    shear = torch.rad2deg(torch.atan(magnitude))
    return _inverse_affine(zero, zero, zero, zero, shear, (-0.5 * width, -0.5 * height))


def translate_x(magnitude: Tensor, height: int, width: int) -> Tensor:
    zero = torch.zeros_like(magnitude)
    return _inverse_affine(zero, magnitude.trunc(), zero, zero, zero, (0.0, 0.0))


def translate_y(magnitude: Tensor, height: int, width: int) -> Tensor:
    zero = torch.zeros_like(magnitude)
    return _inverse_affine(zero, zero, magnitude.trunc(), zero, zero, (0.0, 0.0))


def rotate(magnitude: Tensor, height: int, width: int) -> Tensor:
    """Counter-clockwise by `magnitude` degrees about the centre (torchvision's rotate negates the affine angle)."""
    zero = torch.zeros_like(magnitude)
    return _inverse_affine(-magnitude, zero, zero, zero, zero, (0.0, 0.0))


def _blend(images: Tensor, other: Tensor, ratio: Tensor) -> Tensor:
    """ratio * images + (1 - ratio) * other, clamped and truncated to uint8 like torchvision's _blend."""
    out = torch.addcmul(images.float() * _per_sample(ratio), other, _per_sample(1.0 - ratio))
    return out.clamp_(0, 255).to(torch.uint8)


def _grayscale(images: Tensor) -> Tensor:
    """ITU-R 601 luma, floored, [n, 1, H, W] float32."""
    r, g, b = images.float().unbind(dim=1)
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).floor_().unsqueeze(1)


def brightness(images: Tensor, magnitude: Tensor) -> Tensor:
    return (images.float() * _per_sample(1.0 + magnitude)).clamp_(0, 255).to(torch.uint8)


def color(images: Tensor, magnitude: Tensor) -> Tensor:
    """Saturation: blend with the grayscale image."""
    return _blend(images, _grayscale(images), 1.0 + magnitude)


def contrast(images: Tensor, magnitude: Tensor) -> Tensor:
    """Blend with the mean grey level of each image."""
    return _blend(images, _grayscale(images).mean(dim=(-3, -2, -1), keepdim=True), 1.0 + magnitude)


def smooth(images: Tensor) -> Tensor:
    """The interior [n, 3, H-2, W-2] of PIL's SMOOTH filter (3x3: 1s around a 5), float32 of integer levels.

    The smoothed value is (box sum + 4 * centre) / 13, computed from integers: rounding it gives the same
    result as torchvision's float conv and PIL's float kernel (a ratio of integers over 13 is never within float
    error of .5).
    """
    x = images.float()
    rows = x[..., :-2] + x[..., 1:-1] + x[..., 2:]  # separable 3x3 box sum: faster than pooling on CPU
    box = rows[..., :-2, :] + rows[..., 1:-1, :] + rows[..., 2:, :]
    return box.add_(x[..., 1:-1, 1:-1], alpha=4).div_(13).round_()


def sharpness(images: Tensor, magnitude: Tensor) -> Tensor:
    """Blend the interior pixels with the smoothed image (`smooth`); keep the border."""
    out = images.float()
    interior = out[..., 1:-1, 1:-1]
    interior.addcmul_(smooth(images) - interior, _per_sample(1.0 - (1.0 + magnitude)))
    return out.clamp_(0, 255).to(torch.uint8)


def posterize(images: Tensor, magnitude: Tensor) -> Tensor:
    """Keep the `magnitude` most significant bits of each channel."""
    bits = magnitude.long().clamp(0, 8)
    mask = ((0xFF << (8 - bits)) & 0xFF).to(torch.uint8)
    return images & mask.view(-1, 1, 1, 1)


def solarize(images: Tensor, magnitude: Tensor) -> Tensor:
    """Invert the pixels >= 255 * magnitude (x ^ 255 == 255 - x; much faster than torch.where on uint8)."""
    threshold = _per_sample(255.0 * magnitude).ceil_().to(torch.uint8)  # x >= t <=> x >= ceil(t) for integer x
    return images ^ (images >= threshold).to(torch.uint8).mul_(255)


def autocontrast(images: Tensor, magnitude: Tensor) -> Tensor:
    import torchvision.transforms.v2.functional as TF  # torchvision when an image is transformed, not when checked

    return TF.autocontrast(images)


def equalize(images: Tensor, magnitude: Tensor) -> Tensor:
    import torchvision.transforms.v2.functional as TF  # torchvision when an image is transformed, not when checked

    return TF.equalize(images)


def invert(images: Tensor, magnitude: Tensor) -> Tensor:
    import torchvision.transforms.v2.functional as TF  # torchvision when an image is transformed, not when checked

    return TF.invert(images)


def identity(images: Tensor, magnitude: Tensor) -> Tensor:
    return images


GEOMETRIC: dict[str, Callable[[Tensor, int, int], Tensor]] = {
    "ShearX": shear_x, "ShearY": shear_y, "TranslateX": translate_x, "TranslateY": translate_y, "Rotate": rotate,
}  # magnitudes [n] -> inverse affine matrices [n, 2, 3]; all geometric ops of a stage share one warp
PIXEL: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "Identity": identity, "Brightness": brightness, "Color": color, "Contrast": contrast, "Sharpness": sharpness,
    "Posterize": posterize, "Solarize": solarize, "AutoContrast": autocontrast, "Equalize": equalize,
    "Invert": invert,
}


class OpSet(NamedTuple):
    """A family of ops by name. Pixel ops map (images, magnitudes) -> images. With a `warp`
    (images, matrices, interpolation), the geometric ops map (magnitudes, height, width) -> matrices [n, 2, 3] and
    one warp resamples all the images that drew any of them; without one (None), each geometric op maps
    (images, magnitudes) -> images like a pixel op."""
    pixel: dict[str, Callable[[Tensor, Tensor], Tensor]]
    geometric: dict[str, Callable[..., Tensor]]
    warp: Callable[[Tensor, Tensor, str], Tensor] | None


TORCHVISION = OpSet(PIXEL, GEOMETRIC, _affine)


def _warp(images: Tensor, op: Tensor, magnitude: Tensor, names: list[str], interpolation: str, ops: OpSet) -> Tensor:
    """Apply the geometric op `names[op[i]]` to each image i: each its own matrix, one warp for all."""
    h, w = images.shape[-2:]
    theta = magnitude.new_zeros(len(op), 2, 3)
    for k, name in enumerate(names):
        if name in ops.geometric:
            theta = torch.where((op == k).view(-1, 1, 1), ops.geometric[name](magnitude, h, w), theta)
    return ops.warp(images, theta, interpolation)


def to_device(tensor: Tensor, device: torch.device) -> Tensor:
    """A CPU tensor on `device`; on CUDA through pinned memory, asynchronously: the host does not wait for the GPU."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def apply_ops(images: Tensor, names: list[str], op: Tensor, magnitude: Tensor, interpolation: str,
              ops: OpSet = TORCHVISION) -> tuple[Tensor, Tensor]:
    """Apply op `names[op[i]]` of `ops` (-1: none) with `magnitude[i]` to image i: one batched call per op.

    The images are sorted by op so that each group is a contiguous slice (with a shared warp, all geometric ops
    form one group, warped together). They come back in that order, with it: `result[j]` is image `order[j]`
    transformed.
    `op`, `magnitude` and the returned `order` live on the CPU, where the policies draw them, so that the
    group sizes are known without waiting for the device the images are on.
    """
    shared = [name in ops.geometric and ops.warp is not None for name in names]
    geometric = torch.tensor(shared + [False])  # [-1]: no op
    group = torch.where(geometric[op], len(names), op)
    order = torch.argsort(group, stable=True)
    images = images.index_select(0, to_device(order, images.device))  # much faster than images[order] on CPU
    op, magnitude, group = to_device(op[order], images.device), to_device(magnitude[order], images.device), group[order]
    counts = torch.bincount(group + 1, minlength=len(names) + 2).tolist()  # on the CPU: no device sync
    pieces, start = [], 0
    for g, count in enumerate(counts):  # group g - 1: no op, names[0], ..., geometric
        segment, start = slice(start, start + count), start + count
        if count == 0 or g == 0:
            pieces.append(images[segment])
        elif g == len(names) + 1:
            pieces.append(_warp(images[segment], op[segment], magnitude[segment], names, interpolation, ops))
        else:
            op_fn = ops.pixel.get(names[g - 1]) or ops.geometric[names[g - 1]]
            pieces.append(op_fn(images[segment], magnitude[segment]))
    return torch.cat(pieces), order
