"""Classify image files (PNG, JPEG, any size) with a run's model: top-k classes and probabilities."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .checkpoint import load_model
from .data import DATASETS, load_split
from .export import Normalized


def read_image(path: str | Path, size: int) -> tuple[np.ndarray, str | None]:
    """uint8 RGB [3, size, size] of an image file, and a note when it was resized; ValueError if unreadable."""
    try:
        with Image.open(path) as im:
            im.load()
            image = im.convert("RGB")  # RGBA, greyscale and palette images become RGB
    except (OSError, UnidentifiedImageError) as e:
        raise ValueError(f"{path}: not a readable image ({e}); give a PNG or JPEG file") from None
    note = None
    if image.size != (size, size):
        note = f"{path}: resized from {image.size[0]}x{image.size[1]} to {size}x{size}"
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(image).transpose(2, 0, 1).copy(), note


@torch.no_grad()
def predict_files(run: str | Path, files: list[str], top_k: int = 3, which: str = "best",
                  data_dir: str | Path | None = None) -> tuple[list[dict], list[str], list[str]]:
    """(predictions, notes, errors): one {"file", "label", "probability", "top_k"} per readable file.

    The class names come from the dataset's files in data_dir (as `budgetnet eval` reads them)."""
    if top_k < 1:
        raise ValueError(f"--top-k {top_k}: give at least 1")
    net, recipe, _ = load_model(run, which, "cpu")
    stats = DATASETS[recipe.data.dataset]
    model = Normalized(net, stats.mean, stats.std).eval()
    classes = load_split(recipe.data.dataset, "test", data_dir)[2]
    predictions, notes, errors = [], [], []
    for f in files:
        try:
            image, note = read_image(f, recipe.model.image_size)
        except ValueError as e:
            errors.append(str(e))
            continue
        if note:
            notes.append(note)
        probs = model(torch.from_numpy(image)[None].float() / 255).softmax(1)[0]
        p, idx = probs.topk(min(top_k, len(classes)))
        top = [{"label": classes[i], "probability": round(q, 6)} for q, i in zip(p.tolist(), idx.tolist())]
        predictions.append({"file": str(f), **top[0], "top_k": top})
    return predictions, notes, errors

