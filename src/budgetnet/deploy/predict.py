"""Classify image files (PNG, JPEG, any size) with a run's model: top-k classes and probabilities."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..data.cifar import DATASETS, load_split
from ..errors import UsageError
from ..evaluation.evaluate import check_finite_logits
from ..training.checkpoint import class_names, load_model, written_by
from .export import Normalized


def to_rgb(image: Image.Image) -> Image.Image:
    """An 8-bit RGB copy of an image of any mode PIL opens.

    PIL's own conversion clips integer greyscale (modes I;16*, and I, which older Pillow gives a 16-bit PNG) to
    0..255, so a 16-bit image turned white: those are scaled from the 16-bit range 0..65535 to 0..255 first. Float
    images (F) follow PIL's convention of 0..255 values; RGBA, LA, P, CMYK, 1 and L convert as PIL converts them
    (alpha dropped). PIL opens 48- and 64-bit PNGs as 8-bit RGB(A) already."""
    if image.mode.startswith("I;16") or image.mode == "I":
        levels = np.asarray(image, dtype=np.float64) / 257  # 65535 / 257 = 255
        image = Image.fromarray(np.clip(np.round(levels), 0, 255).astype(np.uint8))
    return image.convert("RGB")


def read_image(path: str | Path, size: int) -> tuple[np.ndarray, str | None]:
    """uint8 RGB [3, size, size] of an image file, and a note when it was resized; ValueError if unreadable or
    larger than PIL's decompression-bomb limit (Image.MAX_IMAGE_PIXELS), refused before it is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # PIL only warns up to twice the limit
            with Image.open(path) as im:
                im.load()
                image = to_rgb(im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UsageError(f"{path}: more than {Image.MAX_IMAGE_PIXELS:,} pixels, too large to decode safely; "
                         f"resize it first (the model sees {size}x{size})") from None
    except (OSError, UnidentifiedImageError) as e:
        raise UsageError(f"{path}: not a readable image ({e}); give a PNG or JPEG file") from None
    note = None
    if image.size != (size, size):
        note = f"{path}: resized from {image.size[0]}x{image.size[1]} to {size}x{size}"
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(image).transpose(2, 0, 1).copy(), note


@torch.no_grad()
def predict_files(run: str | Path, files: list[str], top_k: int = 3, which: str = "best",
                  data_dir: str | Path | None = None) -> tuple[list[dict], list[str], list[str]]:
    """(predictions, notes, errors): one {"file", "label", "probability", "top_k"} per readable file.

    The class names travel with the checkpoint; one written before budgetnet 0.2.0 holds none, and they are read
    from the data set's files in data_dir instead."""
    if top_k < 1:
        raise UsageError(f"--top-k {top_k}: give at least 1")
    net, recipe, state = load_model(run, which, "cpu")
    stats = DATASETS[recipe.data.dataset]
    model = Normalized(net, stats.mean, stats.std).eval()
    classes = class_names(state)
    notes = []
    if classes is None:
        notes.append(f"note: {run} was written by {written_by(state)}, which stored no class names: reading them "
                     f"from the {recipe.data.dataset} files")
        classes = load_split(recipe.data.dataset, "test", data_dir)[2]
    predictions, errors = [], []
    for f in files:
        try:
            image, note = read_image(f, recipe.model.image_size)
        except ValueError as e:
            errors.append(str(e))
            continue
        if note:
            notes.append(note)
        logits = model(torch.from_numpy(image)[None].float() / 255)
        check_finite_logits(logits, f"{run} on {f}")
        probs = logits.softmax(1)[0]
        p, idx = probs.topk(min(top_k, len(classes)))
        top = [{"label": classes[i], "probability": round(q, 6)} for q, i in zip(p.tolist(), idx.tolist())]
        predictions.append({"file": str(f), **top[0], "top_k": top})
    if not predictions:  # nothing to show: the error is the whole answer
        raise UsageError(errors[0] if len(errors) == 1 else
                         f"none of the {len(files)} files is a readable image (first: {errors[0]})")
    return predictions, notes, errors

