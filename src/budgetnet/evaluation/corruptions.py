"""CIFAR-10-C: the 15 common corruptions of Hendrycks & Dietterich (ICLR 2019), severities 1..5.

Each corruption follows the CIFAR-specific definition and constants of the authors' ``make_cifar_c.py``
(robustness repo, ImageNet-C/create_c/), the script that generated the released CIFAR-10-C, and is
vectorized over a batch of uint8 images [N, 32, 32, 3]. Fourteen are computed from the images alone; frost
blends crops of make_cifar_c's frost photographs, read from the ``imagecorruptions`` package when it is
installed (``pip install --no-deps imagecorruptions``: only its image files are used, found without importing
it). Without them frost is skipped with a note saying so, and the other 14 run. The package's corruption
code is not used: it carries the ImageNet-C constants (e.g. gaussian noise std 0.08..0.38 where CIFAR-10-C
uses 0.04..0.10) and needs OpenCV and scikit-image.

Where we depart from make_cifar_c.py:

- motion_blur and snow call ImageMagick's MotionBlurImage through Wand; we apply the same kernel in numpy
  (as ``imagecorruptions`` does) and ImageMagick's rounding; OpenCV's filters, warps and image reading are
  replaced by their scipy, torch and PIL equivalents with the same kernels and borders.
- Random draws come from one numpy Generator per call, so generated images match the release in
  distribution, not pixel for pixel.

Fed the same random draws, all corruptions but impulse_noise (whose draws skimage makes internally) and frost
agree with make_cifar_c.py, run with OpenCV 5, scikit-image 0.26 and Wand over ImageMagick 6, to within one grey
level on CIFAR-10 test images at every severity. Frost was not run against it: its resize by 0.2 picks pixels
without interpolating (see ``_frost_layers``) and a test pins its crop and blend against the photographs, but
PIL decodes the photographs where make_cifar_c uses OpenCV, whose JPEG decoder may differ by a grey level.

For numbers comparable with the literature, evaluate on the released files: ``load_cifar10c`` or
``corruption_suite(..., cifar10c_dir=...)``.

Generating the 15 x 5 corruptions of 10,000 images takes minutes of CPU; ``corruption_suite(..., cache_dir=...)``
pays that once: it writes them in the release's layout under a folder keyed by the images, labels, seed and
GENERATOR_VERSION (``generated_dir``), which later calls read instead.
"""
from __future__ import annotations

import difflib
import functools
import hashlib
import importlib.metadata
import io
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.colors import hsv_to_rgb, rgb_to_hsv
from PIL import Image
from scipy import ndimage
from tqdm import tqdm

from ..errors import UsageError

SEVERITIES = (1, 2, 3, 4, 5)
CIFAR10C_URL = "https://zenodo.org/record/2535967"
GENERATOR_VERSION = 2  # bump whenever a corruption's output changes: it keys the cache (2: frost from the photographs)

# Every corruption maps uint8 images [N, H, W, 3], a severity and a Generator to values in [0, 255];
# `corrupt` truncates them to uint8 as make_cifar_c's np.uint8(...) does.


def _gaussian_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    c = [0.04, 0.06, 0.08, 0.09, 0.10][severity - 1]
    x = x / 255.0
    return np.clip(x + rng.normal(scale=c, size=x.shape), 0, 1) * 255


def _shot_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    c = [500, 250, 100, 75, 50][severity - 1]
    x = x / 255.0
    return np.clip(rng.poisson(x * c) / c, 0, 1) * 255


def _impulse_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Salt and pepper on each channel value, as skimage.util.random_noise(mode="s&p", amount=c)."""
    c = [0.01, 0.02, 0.03, 0.05, 0.07][severity - 1]
    flipped = rng.random(x.shape) < c
    salt = rng.random(x.shape) < 0.5
    return np.where(flipped, salt * 255.0, x)


def _disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """make_cifar_c's disk(): a normalized aliased disk on a 17x17 grid smoothed by a 3x3 Gaussian
    (cv2.GaussianBlur), cropped to its support (at most 5x5 for the CIFAR radii)."""
    grid = np.arange(-8, 9)
    xx, yy = np.meshgrid(grid, grid)
    disk = (xx**2 + yy**2 <= radius**2).astype(np.float64)
    disk /= disk.sum()
    gauss = np.exp(-np.arange(-1, 2) ** 2 / (2 * alias_blur**2))  # cv2.getGaussianKernel(3, alias_blur)
    gauss /= gauss.sum()
    kernel = ndimage.correlate(disk, np.outer(gauss, gauss), mode="constant")
    rows, cols = np.nonzero(kernel)
    return kernel[rows.min():rows.max() + 1, cols.min():cols.max() + 1]


def _defocus_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    radius, alias_blur = [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)][severity - 1]
    kernel = _disk_kernel(radius, alias_blur)
    # cv2.filter2D per channel; its default border BORDER_REFLECT_101 is scipy's "mirror"
    x = ndimage.correlate(x / 255.0, kernel[None, :, :, None], mode="mirror")
    return np.clip(x, 0, 1) * 255


def _gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """skimage.filters.gaussian(x, sigma, channel_axis=-1) on images [N, H, W, C]."""
    return ndimage.gaussian_filter(x, sigma=(0, sigma, sigma, 0), mode="nearest", truncate=4.0)


def _glass_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Blur, jitter every pixel from a neighbour, blur again.

    make_cifar_c visits rows and columns 31..2 from the bottom right and writes
    ``x[h, w], x[h', w'] = x[h', w'], x[h, w]`` with (h', w') = (h + dy, w + dx), dx, dy in {-1, 0}.
    On numpy views that "swap" copies x[h', w'] into x[h, w] and leaves x[h', w'] unchanged, which is what
    the released data contains and what we reproduce. Every source pixel lies above or left of its target
    and is not yet written when read, so each pass is one parallel gather.
    """
    sigma, iterations = [(0.05, 1), (0.25, 1), (0.4, 1), (0.25, 2), (0.4, 2)][severity - 1]
    x = (_gaussian_blur(x / 255.0, sigma) * 255).astype(np.uint8)
    n, h, w, _ = x.shape
    rows, cols = np.arange(2, h), np.arange(2, w)
    batch = np.arange(n)[:, None, None]
    for _ in range(iterations):
        dy = rng.integers(-1, 1, size=(n, len(rows), len(cols)), endpoint=False)
        dx = rng.integers(-1, 1, size=(n, len(rows), len(cols)), endpoint=False)
        x[:, 2:, 2:] = x[batch, rows[:, None] + dy, cols[None, :] + dx]
    return np.clip(_gaussian_blur(x / 255.0, sigma), 0, 1) * 255


def _magick_motion_blur(x: np.ndarray, radius: int, sigma: float, angles: np.ndarray) -> np.ndarray:
    """ImageMagick's MotionBlurImage on images [N, H, W, C] with one angle (radians) per image.

    out(y, x) = sum_i k_i * in(y + round(i sin a), x + round(i cos a)) for i < 2 * radius + 1, with a one-sided
    Gaussian k_i ~ exp(-i^2 / 2 sigma^2) and edge pixels repeated outside the image.
    """
    n, h, w, c = x.shape
    width = 2 * radius + 1
    kernel = np.exp(-np.arange(width) ** 2 / (2 * sigma**2))
    kernel /= kernel.sum()
    pixels = x.reshape(n * h * w, c)  # gather whole pixels by flat index: faster than 3-axis fancy indexing
    first_row, rows, cols = np.arange(n)[:, None, None] * h, np.arange(h)[None, :, None], np.arange(w)[None, None, :]
    out = np.zeros(x.shape)
    for i, k in enumerate(kernel):
        dy = np.ceil(i * np.sin(angles) - 0.5).astype(int)[:, None, None]
        dx = np.ceil(i * np.cos(angles) - 0.5).astype(int)[:, None, None]
        index = (first_row + np.clip(rows + dy, 0, h - 1)) * w + np.clip(cols + dx, 0, w - 1)
        out += k * pixels.take(index.ravel(), axis=0).reshape(x.shape)
    return out


def _magick_to_uint8(x: np.ndarray) -> np.ndarray:
    """Values in [0, 255] as make_cifar_c gets them back from ImageMagick (Q16): rounded to 16-bit quanta,
    then truncated to 8 bits by its PNG writer."""
    return np.floor(np.round(x * 257) / 257)


def _motion_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    radius, sigma = [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)][severity - 1]
    angles = np.deg2rad(rng.uniform(-45, 45, size=len(x)))
    return _magick_to_uint8(_magick_motion_blur(x.astype(np.float64), radius, sigma, angles))


def _clipped_zoom(x: np.ndarray, factor: float) -> np.ndarray:
    """Zoom into the centre of images [N, H, H, C] by `factor` and crop back to H x H.

    make_cifar_c's scipy.ndimage.zoom(order=1), done by F.interpolate: both are bilinear on a grid whose
    corner pixels map onto each other (align_corners=True), with round(crop * factor) output pixels.
    """
    h = x.shape[1]
    crop = int(np.ceil(h / factor))
    top = (h - crop) // 2
    size = round(crop * factor)
    patch = torch.from_numpy(np.ascontiguousarray(x[:, top:top + crop, top:top + crop])).permute(0, 3, 1, 2)
    zoomed = F.interpolate(patch, size=(size, size), mode="bilinear", align_corners=True).permute(0, 2, 3, 1).numpy()
    trim = (size - h) // 2
    return zoomed[:, trim:trim + h, trim:trim + h]


def _zoom_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    # kept as np.arange calls: float rounding makes e.g. arange(1, 1.06, 0.01) end at 1.06
    factors = [np.arange(1, 1.06, 0.01), np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01),
               np.arange(1, 1.21, 0.01), np.arange(1, 1.26, 0.01)][severity - 1]
    x = (x / 255.0).astype(np.float32)
    out = np.zeros_like(x)
    for factor in factors:
        out += _clipped_zoom(x, factor)
    return np.clip((x + out) / (len(factors) + 1), 0, 1) * 255


def _snow(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Zoomed, thresholded, motion-blurred noise added twice (once rotated by 180 degrees) to a whitened image."""
    loc, scale, zoom, threshold, radius, sigma, blend = [
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
        (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)][severity - 1]
    n, h, w, _ = x.shape
    x = x / 255.0
    flakes = _clipped_zoom(rng.normal(loc, scale, size=(n, h, w, 1)), zoom)
    flakes[flakes < threshold] = 0
    flakes = (np.clip(flakes, 0, 1) * 255).astype(np.uint8)  # make_cifar_c hands ImageMagick an 8-bit PNG
    angles = np.deg2rad(rng.uniform(-135, -45, size=n))
    flakes = _magick_to_uint8(_magick_motion_blur(flakes, radius, sigma, angles)) / 255
    gray = x @ np.array([0.299, 0.587, 0.114])  # cv2.COLOR_RGB2GRAY
    x = blend * x + (1 - blend) * np.maximum(x, gray[..., None] * 1.5 + 0.5)
    return np.clip(x + flakes + np.rot90(flakes, k=2, axes=(1, 2)), 0, 1) * 255


def _plasma_fractal(n: int, rng: np.random.Generator, wibbledecay: float, mapsize: int = 32) -> np.ndarray:
    """n diamond-square height maps [n, mapsize, mapsize] scaled to [0, 1] (make_cifar_c's plasma_fractal)."""
    maps = np.zeros((n, mapsize, mapsize))
    step, wibble = mapsize, 100.0
    while step >= 2:
        half = step // 2
        corners = maps[:, ::step, ::step]
        square = corners + np.roll(corners, -1, axis=1)
        square += np.roll(square, -1, axis=2)
        maps[:, half::step, half::step] = square / 4 + wibble * rng.uniform(-wibble, wibble, square.shape)
        centres = maps[:, half::step, half::step]
        top = centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=2)
        maps[:, ::step, half::step] = top / 4 + wibble * rng.uniform(-wibble, wibble, top.shape)
        left = centres + np.roll(centres, 1, axis=2) + corners + np.roll(corners, -1, axis=1)
        maps[:, half::step, ::step] = left / 4 + wibble * rng.uniform(-wibble, wibble, left.shape)
        step //= 2
        wibble /= wibbledecay
    maps -= maps.min(axis=(1, 2), keepdims=True)
    return maps / maps.max(axis=(1, 2), keepdims=True)


def _fog(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    strength, decay = [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)][severity - 1]
    x = x / 255.0
    max_val = x.max(axis=(1, 2, 3), keepdims=True)
    x = x + strength * _plasma_fractal(len(x), rng, decay)[..., None]
    return np.clip(x * max_val / (max_val + strength), 0, 1) * 255


FROST_INSTALL = "pip install --no-deps imagecorruptions"
# make_cifar_c draws np.random.randint(5) from its list of six photographs: frost6.jpg is never used
_FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")


class FrostUnavailable(UsageError):
    """The frost photographs are not installed: frost cannot be generated (the other corruptions can)."""


def frost_photographs() -> Path | None:
    """The folder holding make_cifar_c's frost photographs, from the installed ``imagecorruptions`` package (which
    ships them byte for byte), or None when they are not all there. The package is located through its metadata,
    never imported: its __init__ imports OpenCV."""
    try:
        folder = Path(importlib.metadata.distribution("imagecorruptions").locate_file("imagecorruptions/frost"))
    except importlib.metadata.PackageNotFoundError:
        return None
    return folder if all((folder / name).is_file() for name in _FROST_FILES) else None


@functools.cache
def _frost_layers() -> tuple[np.ndarray, ...]:
    """The five frost photographs as make_cifar_c resizes them: RGB uint8 (cv2.imread drops alpha, as PIL's RGB
    conversion does), scaled by 0.2 with cv2.resize's INTER_LINEAR, which at exactly 1/5 maps output pixel i to
    source pixel (i + 0.5) * 5 - 0.5 = 5i + 2 with weight 1: a subsampling, round(side * 0.2) pixels a side."""
    folder = frost_photographs()
    if folder is None:
        raise FrostUnavailable(f"frost needs the frost photographs of the imagecorruptions package: {FROST_INSTALL}")
    layers = []
    for name in _FROST_FILES:
        with Image.open(folder / name) as image:
            rgb = np.asarray(image.convert("RGB"))
        layers.append(rgb[2::5, 2::5][:round(rgb.shape[0] * 0.2), :round(rgb.shape[1] * 0.2)])
    return tuple(layers)


def _frost(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """c0 * x + c1 * a random crop of one of the five resized frost photographs, one draw per image."""
    c0, c1 = [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)][severity - 1]
    layers = _frost_layers()
    n, size = len(x), x.shape[1]
    which = rng.integers(len(layers), size=n)
    heights, widths = np.array([layer.shape[:2] for layer in layers])[which].T
    rows, cols = rng.integers(0, heights - size), rng.integers(0, widths - size)  # randint's exclusive high
    frost = np.stack([layers[k][r:r + size, c:c + size] for k, r, c in zip(which, rows, cols)])
    return np.clip(c0 * x + c1 * frost.astype(np.float64), 0, 255)


def _brightness(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    c = [0.05, 0.1, 0.15, 0.2, 0.3][severity - 1]
    hsv = rgb_to_hsv(x / 255.0)
    hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
    return np.clip(hsv_to_rgb(hsv), 0, 1) * 255


def _contrast(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    c = [0.75, 0.5, 0.4, 0.3, 0.15][severity - 1]
    x = x / 255.0
    means = x.mean(axis=(1, 2), keepdims=True)
    return np.clip((x - means) * c + means, 0, 1) * 255


def _bilinear(x: np.ndarray, rows: np.ndarray, cols: np.ndarray, mirror: bool) -> np.ndarray:
    """Sample images [N, H, W, C] bilinearly at float pixel coordinates rows, cols [N, H, W].

    Outside the image, mirror=True reflects about the edge pixels (cv2 BORDER_REFLECT_101, scipy "mirror"),
    mirror=False about the image border (scipy "reflect").
    """
    _, h, w, _ = x.shape
    if mirror:  # align_corners=True: -1 and 1 are the centres of the edge pixels
        grid = np.stack([2 * cols / (w - 1) - 1, 2 * rows / (h - 1) - 1], axis=-1)
    else:  # align_corners=False: -1 and 1 are the outer borders of the edge pixels
        grid = np.stack([(2 * cols + 1) / w - 1, (2 * rows + 1) / h - 1], axis=-1)
    images = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).permute(0, 3, 1, 2)
    out = F.grid_sample(images, torch.from_numpy(grid.astype(np.float32)), mode="bilinear",
                        padding_mode="reflection", align_corners=mirror)
    return out.permute(0, 2, 3, 1).numpy()


def _elastic_transform(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """A random affine warp (three anchor points moved by up to `affine` pixels), then a smooth random
    displacement field (uniform noise, Gaussian-blurred with `sigma`, scaled by `alpha`)."""
    n, h, w, _ = x.shape
    alpha, sigma, affine = np.array([(0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05),
                                     (0.1, 0.03, 0.03)][severity - 1]) * h
    x = x / 255.0
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)

    # cv2.warpAffine(M) samples the source at M^-1(p): solve the map from moved anchors back to anchors
    centre, size = h // 2, h // 3
    anchors = np.array([[centre + size, centre + size], [centre + size, centre - size],
                        [centre - size, centre - size]], dtype=np.float64)  # (x, y) points
    moved = anchors + rng.uniform(-affine, affine, size=(n, 3, 2))
    inverse = np.linalg.solve(np.concatenate([moved, np.ones((n, 3, 1))], axis=2), np.broadcast_to(anchors, (n, 3, 2)))
    source = np.stack([xs, ys, np.ones_like(xs)], axis=-1) @ inverse[:, None]  # [n, h, w, 2] as (x, y)
    x = _bilinear(x, source[..., 1], source[..., 0], mirror=True)

    def displacement() -> np.ndarray:  # skimage.filters.gaussian(noise, sigma, mode="reflect", truncate=3)
        noise = rng.uniform(-1, 1, size=(n, h, w))
        return ndimage.gaussian_filter(noise, sigma=(0, sigma, sigma), mode="reflect", truncate=3) * alpha

    dx, dy = displacement(), displacement()
    return np.clip(_bilinear(x, ys + dy, xs + dx, mirror=False), 0, 1) * 255


def _pixelate(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    c = [0.95, 0.9, 0.85, 0.75, 0.65][severity - 1]
    h, w = x.shape[1:3]
    small = (int(w * c), int(h * c))
    return np.stack([np.asarray(Image.fromarray(im).resize(small, Image.BOX).resize((w, h), Image.BOX))
                     for im in x])


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(buffer))


def _jpeg_compression(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    quality = [80, 65, 58, 50, 40][severity - 1]
    return np.stack([_jpeg(im, quality) for im in x])


_CORRUPTIONS: dict[str, Callable[[np.ndarray, int, np.random.Generator], np.ndarray]] = {
    "gaussian_noise": _gaussian_noise,
    "shot_noise": _shot_noise,
    "impulse_noise": _impulse_noise,
    "defocus_blur": _defocus_blur,
    "glass_blur": _glass_blur,
    "motion_blur": _motion_blur,
    "zoom_blur": _zoom_blur,
    "snow": _snow,
    "frost": _frost,
    "fog": _fog,
    "brightness": _brightness,
    "contrast": _contrast,
    "elastic_transform": _elastic_transform,
    "pixelate": _pixelate,
    "jpeg_compression": _jpeg_compression,
}
CORRUPTIONS: tuple[str, ...] = tuple(_CORRUPTIONS)  # the standard CIFAR-10-C order, as the release names its files


def _check(name: str, severity: int) -> None:
    if name not in _CORRUPTIONS:
        close = difflib.get_close_matches(name, CORRUPTIONS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown corruption {name!r}.{hint} Valid names: {', '.join(CORRUPTIONS)}")
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or severity not in SEVERITIES:
        raise ValueError(f"severity must be an integer in 1..5, got {severity!r}")


def corrupt(images: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """Corrupt uint8 images [N, 32, 32, 3] (CIFAR's NHWC layout) with one CIFAR-10-C corruption.

    Returns uint8 images of the same shape. The output is a deterministic function of the images, name,
    severity and seed; different (name, severity) pairs draw independent random numbers from the same seed.
    """
    _check(name, severity)
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (32, 32, 3):
        hint = " (NCHW? use images.transpose(0, 2, 3, 1))" if images.ndim == 4 and images.shape[1] == 3 else ""
        raise ValueError(f"images must be uint8 [N, 32, 32, 3], got {images.dtype} {list(images.shape)}{hint}")
    if len(images) == 0:
        return images.copy()
    rng = np.random.default_rng([seed, CORRUPTIONS.index(name), severity])
    out = _CORRUPTIONS[name](images, int(severity), rng)
    return np.clip(out, 0, 255).astype(np.uint8)  # truncates, like make_cifar_c's np.uint8(...)


def load_cifar10c(directory: str | Path, name: str, severity: int) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 [M, 32, 32, 3] and labels int64 [M] of one corruption and severity from the CIFAR-10-C release.

    The release holds DIR/<name>.npy with the five severities stacked (10,000 images each for the full set)
    and DIR/labels.npy. Images are memory-mapped, so only the requested severity is read.
    """
    _check(name, severity)
    directory = Path(directory)
    paths = {"images": directory / f"{name}.npy", "labels": directory / "labels.npy"}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"CIFAR-10-C file(s) not found: {', '.join(missing)}. Download CIFAR-10-C.tar "
                                f"from {CIFAR10C_URL} and unpack it, then pass the CIFAR-10-C folder.")
    arrays = {}
    for key, path in paths.items():
        try:
            arrays[key] = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise UsageError(f"{path} is not a readable .npy file ({err}); download it again from {CIFAR10C_URL}") from err
    images, labels = arrays["images"], arrays["labels"]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (32, 32, 3) or len(images) % 5:
        raise UsageError(f"{paths['images']} should hold uint8 [5 * N, 32, 32, 3] images (five severities), "
                         f"got {images.dtype} {list(images.shape)}; download it again from {CIFAR10C_URL}")
    if labels.shape != (len(images),):
        raise UsageError(f"{paths['labels']} has shape {list(labels.shape)}, expected [{len(images)}] "
                         f"to match {paths['images'].name}")
    per_severity = len(images) // 5
    rows = slice((severity - 1) * per_severity, severity * per_severity)
    return np.array(images[rows]), np.array(labels[rows], dtype=np.int64)


def generated_dir(images: np.ndarray, labels: np.ndarray, seed: int, cache_dir: str | Path) -> Path:
    """CACHE_DIR/<key>/CIFAR-10-C, the folder of the generated corruptions of these images: the key is a hash of
    the images, labels, seed and GENERATOR_VERSION, so that other data or a changed generator never reads them."""
    digest = hashlib.sha256(f"budgetnet corruptions v{GENERATOR_VERSION} seed {seed} {images.shape}".encode())
    digest.update(np.ascontiguousarray(images, dtype=np.uint8).tobytes())
    digest.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    return Path(cache_dir) / digest.hexdigest()[:20] / "CIFAR-10-C"


def _save_atomically(path: Path, array: np.ndarray) -> None:
    """np.save to a temporary file beside `path`, then renamed onto it: a reader sees the whole file or none."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def cache_corruption(images: np.ndarray, labels: np.ndarray, name: str, seed: int, directory: str | Path) -> Path:
    """Generate the five severities of one corruption of `images` into directory/<name>.npy, stacked as the release
    stacks them ([5 * N, 32, 32, 3], severity 1 first), beside labels.npy ([5 * N]); each file written atomically.
    The images are those of corrupt(images, name, severity, seed)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if not _holds(directory / "labels.npy", (len(SEVERITIES) * len(labels),), np.int64):
        _save_atomically(directory / "labels.npy", np.tile(np.asarray(labels, dtype=np.int64), len(SEVERITIES)))
        (directory.parent / "source.json").write_text(json.dumps(
            {"generator_version": GENERATOR_VERSION, "seed": seed, "images": len(images)}) + "\n")
    path = directory / f"{name}.npy"
    _save_atomically(path, np.concatenate([corrupt(images, name, s, seed=seed) for s in SEVERITIES]))
    return path


def _holds(path: Path, shape: tuple[int, ...], dtype: type) -> bool:
    """Whether `path` is an .npy of this shape and dtype (a truncated or damaged file is not)."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError):
        return False
    return array.shape == shape and array.dtype == dtype


def _in_cache(images: np.ndarray, labels: np.ndarray, name: str, seed: int, directory: Path, bar: tqdm) -> bool:
    """Whether directory/<name>.npy holds the corruption, generating it there first (again, with a note, when a
    file there is damaged); False (said once per folder) when the cache cannot be written, the suite then
    generating in memory as without a cache."""
    path, n = directory / f"{name}.npy", len(SEVERITIES) * len(images)
    if _holds(path, (n, *images.shape[1:]), np.uint8) and _holds(directory / "labels.npy", (n,), np.int64):
        return True
    if path.is_file():
        print(f"note: {path} in the corruption cache is damaged (truncated, or not the images it should hold); "
              "generating it again", file=sys.stderr)
    if directory in _UNWRITABLE:
        return False
    bar.set_postfix_str(f"generating {name}, 5 severities, into the cache")
    try:
        cache_corruption(images, labels, name, seed, directory)
        return True
    except OSError as e:
        _UNWRITABLE.add(directory)
        print(f"note: cannot cache the generated corruptions in {directory} ({e}); generating them in memory, "
              "at every call", file=sys.stderr)
        return False


_UNWRITABLE: set[Path] = set()


def corruption_suite(images: np.ndarray, labels: np.ndarray,
                     evaluate_fn: Callable[[np.ndarray, np.ndarray], float],
                     *, names: Sequence[str] = CORRUPTIONS, severities: Sequence[int] = SEVERITIES,
                     cifar10c_dir: str | Path | None = None, progress: bool = True,
                     limit: int | None = None, seed: int = 0, cache_dir: str | Path | None = None) -> dict:
    """Accuracy under each corruption and severity.

    evaluate_fn(images uint8 [N, 32, 32, 3], labels [N]) -> accuracy in [0, 1]. With cifar10c_dir the released
    files are evaluated (`images` and `labels` are then unused and may be None); otherwise the corruptions are
    generated from `images` with `seed`. `limit` keeps only the first `limit` images, for quick runs. With
    cache_dir, generated corruptions are read from generated_dir(images, labels, seed, cache_dir), and a corruption
    not there yet is generated into it first, all five severities (cache_corruption): a later call pays nothing.

    Frost generated needs the frost photographs (frost_photographs()); without them it is skipped, saying in one
    line what to install, and the others run.

    Returns {"corruption_accuracy": mean over all (name, severity), "corruption_error": 1 - that,
    "per_corruption": {name: {"1": acc, ..., "5": acc, "mean": acc}}, "source": "cifar10c" | "generated",
    "num_images": images per (name, severity), "generated": the corruptions computed here, "read": {name: the
    file or folder its images or photographs were read from}, "skipped": {name: why}}.
    """
    for name in names:
        for severity in severities:
            _check(name, severity)
    if not names or not severities:
        raise ValueError("names and severities must not be empty")
    skipped, read = {}, {}
    if cifar10c_dir is not None:
        read = {name: str(Path(cifar10c_dir) / f"{name}.npy") for name in names}
    elif "frost" in names:
        photographs = frost_photographs()
        if photographs is None:
            skipped["frost"] = f"the frost photographs are not installed: {FROST_INSTALL}"
            print(f"note: frost skipped: it needs the frost photographs of the imagecorruptions package: "
                  f"{FROST_INSTALL}", file=sys.stderr)
            names = [name for name in names if name != "frost"]
            if not names:
                raise FrostUnavailable(f"frost needs the frost photographs of the imagecorruptions package: "
                                       f"{FROST_INSTALL}")
        else:
            read["frost"] = str(photographs)
    if cifar10c_dir is None:
        if images is None or labels is None or len(images) != len(labels):
            raise ValueError("without cifar10c_dir, images and labels of the same length are required")
        images, labels = images[:limit], np.asarray(labels)[:limit]
    cached = generated_dir(images, labels, seed, cache_dir) if cifar10c_dir is None and cache_dir else None

    per_corruption: dict[str, dict[str, float]] = {}
    num_images = 0
    with tqdm(total=len(names) * len(severities), desc="corruptions", disable=not progress) as bar:
        for name in names:
            accs = {}
            for severity in severities:
                bar.set_postfix_str(f"{name} {severity}")
                if cifar10c_dir is not None:
                    corrupted, targets = load_cifar10c(cifar10c_dir, name, severity)
                    corrupted, targets = corrupted[:limit], targets[:limit]
                elif cached is not None and _in_cache(images, labels, name, seed, cached, bar):
                    corrupted, targets = load_cifar10c(cached, name, severity)
                else:
                    corrupted, targets = corrupt(images, name, severity, seed=seed), labels
                num_images = len(corrupted)
                accs[str(severity)] = float(evaluate_fn(corrupted, targets))
                bar.update()
            accs["mean"] = float(np.mean(list(accs.values())))
            per_corruption[name] = accs
    mean = float(np.mean([accs["mean"] for accs in per_corruption.values()]))
    return {"corruption_accuracy": mean, "corruption_error": 1.0 - mean, "per_corruption": per_corruption,
            "source": "generated" if cifar10c_dir is None else "cifar10c", "num_images": num_images,
            "generated": [] if cifar10c_dir is not None else list(names), "read": read, "skipped": skipped}


def plot_corruption_heatmap(results: dict | Sequence[tuple[str, dict]], out: str | Path, title: str = "") -> Path:
    """Heat map PNG of corruption error (%).

    One result of `corruption_suite`: corruptions x severities (plus their mean). Several (label, result)
    pairs: runs x corruptions of the error averaged over severities (plus the overall mean).
    """
    from .. import plots  # matplotlib only when a figure is drawn

    out = Path(out)
    runs = [("", results)] if isinstance(results, dict) else list(results)
    if not runs:
        raise ValueError("no results to plot")
    if len(runs) == 1:
        per = runs[0][1]["per_corruption"]
        row_labels = list(per)
        col_labels = [key for key in per[row_labels[0]] if key != "mean"] + ["mean"]
        errors = np.array([[1 - per[name][key] for key in col_labels] for name in row_labels]) * 100
        xlabel, ylabel = "severity", "corruption"
        title = title or f"{runs[0][0] or 'Corruption'} error (%), mean {runs[0][1]['corruption_error']:.1%}"
    else:
        col_labels = list(runs[0][1]["per_corruption"]) + ["mean"]
        row_labels = [label for label, _ in runs]
        errors = np.array([[1 - res["per_corruption"][name]["mean"] for name in col_labels[:-1]]
                           + [res["corruption_error"]] for _, res in runs]) * 100
        xlabel, ylabel = "corruption (error averaged over severities)", "run"
        title = title or "Corruption error (%)"

    fig, ax = plots.subplots(figsize=(0.75 * len(col_labels) + 3, 0.4 * len(row_labels) + 1.8) if len(runs) == 1
                           else (0.6 * len(col_labels) + 3, 0.45 * len(row_labels) + 2.6))
    image = ax.imshow(errors, cmap="magma_r", vmin=0, vmax=max(errors.max(), 1.0), aspect="auto")
    ax.set_xticks(range(len(col_labels)), [label.replace("_", " ") for label in col_labels],
                  rotation=45 if len(runs) > 1 else 0, ha="right" if len(runs) > 1 else "center")
    ax.set_yticks(range(len(row_labels)), [label.replace("_", " ") for label in row_labels])
    ax.axvline(len(col_labels) - 1.5, color="white", linewidth=2)  # separates the mean column
    threshold = errors.max() * 0.6
    for (i, j), value in np.ndenumerate(errors):
        ax.text(j, i, f"{value:.1f}", ha="center", va="center", fontsize=8,
                color="white" if value > threshold else "black")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="error (%)", **({} if len(runs) == 1 else {"fraction": 0.04, "pad": 0.02}))
    return plots.save(fig, out)
