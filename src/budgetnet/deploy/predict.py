"""Classify images with a run's model, in batches on a device: image files (PNG, JPEG, any size), folders of them,
.npy arrays and CIFAR-format pickled batches; top-k classes and probabilities, printed or written to a CSV file."""
from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from ..data.cifar import DATASETS, load_split, read_batch_images
from ..errors import UsageError
from ..evaluation.evaluate import check_finite_logits
from ..training.checkpoint import load_model
from ..training.runtime import resolve_device
from .export import Normalized

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")  # in folders


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
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:  # what PIL raises for a damaged file
        raise UsageError(f"{path}: not a readable image ({e}); give a PNG or JPEG file") from None
    note = None
    if image.size != (size, size):
        note = f"{path}: resized from {image.size[0]}x{image.size[1]} to {size}x{size}"
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(image).transpose(2, 0, 1).copy(), note


def read_array(path: str | Path, size: int) -> np.ndarray:
    """The images of an .npy file, uint8 [N, size, size, 3], memory-mapped (nothing is read until used);
    ValueError if it is not such an array."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise UsageError(f"{path}: not a readable .npy file ({e})") from None
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[1:] != (size, size, 3):
        hint = " (NCHW? save it as array.transpose(0, 2, 3, 1))" if array.ndim == 4 and array.shape[1] == 3 else ""
        raise UsageError(f"{path}: an .npy must hold uint8 images [N, {size}, {size}, 3], got {array.dtype} "
                         f"{list(array.shape)}{hint}")
    return array


def is_pickle(path: Path) -> bool:
    """Whether a file starts as a pickle of protocol 2 or later does (the CIFAR batches are protocol 2)."""
    try:
        with open(path, "rb") as f:
            return f.read(1) == b"\x80"
    except OSError:
        return False  # read_image names the problem


def expand(inputs: list[str]) -> tuple[list[Path], list[str]]:
    """(files, notes): the inputs with each folder replaced by the image files under it (by suffix, sorted)."""
    files, notes = [], []
    for name in inputs:
        path = Path(name)
        if not path.is_dir():
            files.append(path)
            continue
        found = sorted(p for p in path.rglob("*") if p.is_file())
        images = [p for p in found if p.suffix.lower() in IMAGE_SUFFIXES]
        if len(images) < len(found):
            notes.append(f"note: {path}: skipped {len(found) - len(images):,} files that are not images "
                         f"({', '.join(IMAGE_SUFFIXES)})")
        if not images:
            notes.append(f"note: {path}: no image files in this folder")
        files += images
    return files, notes


def read_images(path: Path, size: int, chunk: int) -> Iterator[tuple[np.ndarray, int | None, str | None]]:
    """The images of one input file as (uint8 [k, 3, size, size], index in the file of the first or None for an
    image file, a note or None), at most `chunk` at a time; ValueError if the file is unreadable."""
    if path.suffix.lower() == ".npy":
        array = read_array(path, size)
        for start in range(0, len(array), chunk):  # only this chunk is read from disk
            yield np.ascontiguousarray(array[start:start + chunk].transpose(0, 3, 1, 2)), start, None
    elif is_pickle(path):
        images = read_batch_images(path)  # a pickle cannot be read in parts
        if size != 32:
            raise UsageError(f"{path}: a CIFAR-format batch holds 32x32 images; this model takes {size}x{size}")
        for start in range(0, len(images), chunk):
            yield images[start:start + chunk], start, None
    else:
        image, note = read_image(path, size)
        yield image[None], None, note


class Predictor:
    """A run's model on a device, in eval mode, with its class names: classifies uint8 images into top-k lists."""

    def __init__(self, run: str | Path, top_k: int = 3, which: str = "best", data_dir: str | Path | None = None,
                 device: str = "auto"):
        if top_k < 1:
            raise UsageError(f"--top-k {top_k}: give at least 1")
        self.device = resolve_device(device)
        net, recipe, meta = load_model(run, which, self.device)
        stats = DATASETS[recipe.data.dataset]
        self.model = Normalized(net, stats.mean, stats.std).to(self.device).eval()
        self.run, self.size = str(run), recipe.model.image_size
        self.notes: list[str] = []
        classes = meta.classes
        if classes is None:
            self.notes.append(f"note: {run} was written by {meta.written_by}, which stored no class names: reading "
                              f"them from the {recipe.data.dataset} files")
            classes = load_split(recipe.data.dataset, "test", data_dir)[2]
        self.classes = classes
        self.top_k = min(top_k, len(classes))

    @torch.no_grad()
    def classify(self, images: np.ndarray, source: str) -> list[list[dict]]:
        """Per image of uint8 [N, 3, H, W], its top-k classes as [{"label", "probability"}] (float32 softmax)."""
        x = torch.from_numpy(images).to(self.device).float().div_(255)
        logits = self.model(x.contiguous(memory_format=torch.channels_last)).float()
        check_finite_logits(logits, f"{self.run} on {source}")
        p, idx = logits.softmax(1).topk(self.top_k)
        return [[{"label": self.classes[i], "probability": round(q, 6)} for q, i in zip(qs, ids)]
                for qs, ids in zip(p.tolist(), idx.tolist())]

    def predict(self, inputs: list[str], batch_size: int = 256, errors: list[str] | None = None,
                progress: bool | None = None) -> Iterator[dict]:
        """One {"file", "index" (arrays and batches only), "label", "probability", "top_k"} per readable image of
        `inputs` (files, folders, .npy arrays, pickled batches), `batch_size` at a time, streamed: at most one
        batch of images is held. Each unreadable file's message is appended to `errors`; the notes (resized
        images, skipped files) go to self.notes. `progress`: a bar on stderr (None: when stderr is a terminal).
        UsageError when nothing is readable."""
        if batch_size < 1:
            raise UsageError(f"--batch-size {batch_size}: give at least 1")
        errors = [] if errors is None else errors
        files, notes = expand(inputs)
        self.notes += notes
        names: list[tuple[str, int | None]] = []  # the images held: less than a batch, plus one chunk
        held: list[np.ndarray] = []
        found = 0
        with tqdm(total=sum(map(self._expected, files)), unit="img", desc="predict",
                  disable=None if progress is None else not progress) as bar:
            for chunk_names, images in self._chunks(files, batch_size, errors, bar):
                names += chunk_names
                held.append(images)
                while len(names) >= batch_size:
                    batch = np.concatenate(held)
                    held = [batch[batch_size:]]
                    yield from self._rows(names[:batch_size], batch[:batch_size])
                    found, names = found + batch_size, names[batch_size:]
            if names:
                yield from self._rows(names, np.concatenate(held))
                found += len(names)
        if not found:  # nothing to show: the error is the whole answer
            raise UsageError(errors[0] if len(errors) == 1 else f"none of the {len(files)} files holds a readable "
                             "image" + (f" (first: {errors[0]})" if errors else ""))

    def _chunks(self, files: list[Path], chunk: int, errors: list[str], bar: tqdm
                ) -> Iterator[tuple[list[tuple[str, int | None]], np.ndarray]]:
        """(names, images) of the files, at most `chunk` images at a time, each name a (file, index in the file or
        None); unreadable files' messages go to `errors`."""
        for path in files:
            expected, read = self._expected(path), 0
            try:
                for images, start, note in read_images(path, self.size, chunk):
                    if note:
                        self.notes.append(note)
                    read += len(images)
                    if read > expected:  # a pickled batch, counted once read
                        bar.total, expected = bar.total + read - expected, read
                    bar.update(len(images))
                    yield [(str(path), None if start is None else start + i) for i in range(len(images))], images
            except ValueError as e:
                errors.append(str(e))
                bar.update(expected - read)

    def _expected(self, path: Path) -> int:
        """Images a file should hold, for the progress bar: an .npy's length from its header, else 1."""
        try:
            return len(read_array(path, self.size)) if path.suffix.lower() == ".npy" else 1
        except ValueError:
            return 1

    def _rows(self, names: list[tuple[str, int | None]], images: np.ndarray) -> Iterator[dict]:
        first = names[0][0] if names[0][1] is None else f"{names[0][0]}[{names[0][1]}]"
        tops = self.classify(images, first if len(names) == 1 else f"the batch of {len(names)} from {first} on")
        for (file, index), top in zip(names, tops):
            yield {"file": file, **({} if index is None else {"index": index}), **top[0], "top_k": top}


def write_csv(path: str | Path, predictions: Iterator[dict], top_k: int) -> int:
    """Write one row per prediction to a CSV file (file, index, label, probability, then label_i, probability_i for
    ranks 2..top_k) through a temporary name renamed onto `path` at the end, so that a failure leaves no partial
    file; the number of rows. UsageError, before anything is read, when `path` cannot be a file."""
    path = Path(path)
    if path.is_dir() or not path.parent.is_dir():
        raise UsageError(f"--csv {path}: " + ("a folder; give a file name" if path.is_dir() else
                                               f"no folder {path.parent}; create it first"))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    header = ["file", "index", "label", "probability"] + [f"{c}_{i}" for i in range(2, top_k + 1)
                                                           for c in ("label", "probability")]
    rows = 0
    try:
        with open(tmp, "w", newline="") as f:
            out = csv.writer(f)
            out.writerow(header)
            for p in predictions:
                out.writerow([p["file"], p.get("index", ""), p["label"], p["probability"]]
                             + [v for t in p["top_k"][1:] for v in (t["label"], t["probability"])])
                rows += 1
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return rows
