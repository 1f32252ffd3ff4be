"""CIFAR-10/100 from the standard python format: locate, check, load as uint8 tensors on the device, batch."""
from __future__ import annotations

import hashlib
import math
import os
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import Tensor

from ..errors import UsageError
from .schema import CHANNEL_MEAN, CHANNEL_STD, IMAGE_SHAPE, NUM_CLASSES, SPLIT_SIZES, DataConfig

ENV_VAR = "BUDGETNET_DATA"


@dataclass(frozen=True)
class DatasetInfo:
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    names_key: str
    labels_key: str
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    torchvision_class: type


DATASETS = {
    "cifar10": DatasetInfo("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
                           "batches.meta", "label_names", "labels", NUM_CLASSES["cifar10"],
                           CHANNEL_MEAN["cifar10"], CHANNEL_STD["cifar10"], torchvision.datasets.CIFAR10),
    "cifar100": DatasetInfo("cifar-100-python", ("train",), ("test",), "meta", "fine_label_names", "fine_labels",
                            NUM_CLASSES["cifar100"], CHANNEL_MEAN["cifar100"], CHANNEL_STD["cifar100"],
                            torchvision.datasets.CIFAR100),
}


class DataError(UsageError):
    """The data set is missing, truncated or malformed: the message says where to put a good copy."""


def default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "budgetnet"


def resolve_data_dir(data_dir: str | Path | None = None) -> tuple[Path, bool]:
    """The data root (from the argument, $BUDGETNET_DATA, or the cache) and whether the user chose it."""
    if data_dir:
        return Path(data_dir).expanduser(), True
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser(), True
    return default_cache(), False


def load_split(dataset: str, split: str, data_dir: str | Path | None = None,
               note: bool = True) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images uint8 [N, 3, 32, 32], labels int64 [N] and class names of one split ('train' or 'test');
    `note`: say (once per process) when the copy is not the official release."""
    if dataset not in DATASETS:
        raise DataError(f"data.dataset={dataset!r} is unknown: use one of {', '.join(DATASETS)}")
    info = DATASETS[dataset]
    root, chosen = resolve_data_dir(data_dir)
    folder = root / info.folder
    if not folder.is_dir():
        if chosen:
            raise DataError(
                f"no {info.folder}/ in {root}: put the python-format {dataset} there "
                f"({info.torchvision_class.url}, unpacked), or point --data / ${ENV_VAR} at the folder that holds it")
        _download(info, root)
    _check_checksums(info, folder, note)
    names = _unpickle_dict(folder / info.meta_file).get(info.names_key)
    if not isinstance(names, list) or len(names) != info.num_classes:
        raise DataError(f"{folder / info.meta_file}: '{info.names_key}' must list the {info.num_classes} class "
                        f"names of {dataset}; the file is not {dataset}'s, replace it")
    files = info.train_files if split == "train" else info.test_files
    images, labels = [], []
    for name in files:
        entry = _unpickle_dict(folder / name)
        data = _batch_data(entry, folder / name)
        images.append(data)
        labels.append(_labels(entry.get(info.labels_key), folder / name, info.labels_key, len(data)))
    x, y = np.concatenate(images).reshape(-1, *IMAGE_SHAPE), np.concatenate(labels)
    if len(x) != SPLIT_SIZES[split]:
        raise DataError(f"{folder}: the {split} split has {len(x):,} images, expected {SPLIT_SIZES[split]:,}; "
                        "the copy is incomplete")
    if y.min() < 0 or y.max() >= info.num_classes:
        raise DataError(f"{folder}: labels outside 0..{info.num_classes - 1}; the files are not {dataset}")
    return x, y, [n.decode() if isinstance(n, bytes) else n for n in names]


def _download(info: DatasetInfo, root: Path) -> None:
    """Download to the cache with torchvision (which verifies the official md5 sums)."""
    print(f"downloading {info.folder} to {root} (first use) ...", file=sys.stderr)
    try:
        info.torchvision_class(root=str(root), train=True, download=True)
    except Exception as e:  # offline, proxy, disk full: say where to put the data instead
        raise DataError(
            f"could not download {info.folder} ({e}). Without network access, download "
            f"{info.torchvision_class.url} elsewhere, unpack it into a folder, and pass that folder with "
            f"--data DIR or ${ENV_VAR}=DIR (it must contain {info.folder}/)") from None


_WARNED: set[Path] = set()


def _check_checksums(info: DatasetInfo, folder: Path, note: bool = True) -> None:
    """Check that every file is there; say once (when `note`) if the copy differs from the official release (it is
    then checked by structure)."""
    if folder in _WARNED:
        return
    _WARNED.add(folder)
    official = dict(info.torchvision_class.train_list + info.torchvision_class.test_list)
    official[info.meta_file] = info.torchvision_class.meta["md5"]
    for name, md5 in official.items():
        path = folder / name
        if not path.is_file():
            raise DataError(f"{path} is missing: the {info.folder} copy is incomplete")
        if note and hashlib.md5(path.read_bytes()).hexdigest() != md5:
            print(f"note: {folder} differs from the official release (md5 of {name}); it is a re-encoded copy, "
                  "checked by structure (files, shapes, counts, labels) instead. Accuracy on it is not strictly "
                  "comparable to published figures.", file=sys.stderr)
            return


_OFFICIAL: dict[Path, bool] = {}  # per folder: whether every file has the official md5 sum (hashed once)


def official_copy(dataset: str, data_dir: str | Path | None = None) -> bool | None:
    """The data check's verdict: True when the folder holds the official release (every md5 sum as published),
    False for a re-encoded copy, None when there is no such folder (nothing is downloaded)."""
    info = DATASETS[dataset]
    folder = resolve_data_dir(data_dir)[0] / info.folder
    if not folder.is_dir():
        return None
    if folder not in _OFFICIAL:
        sums = dict(info.torchvision_class.train_list + info.torchvision_class.test_list)
        sums[info.meta_file] = info.torchvision_class.meta["md5"]
        _OFFICIAL[folder] = all((folder / name).is_file() and hashlib.md5((folder / name).read_bytes()).hexdigest()
                                == md5 for name, md5 in sums.items())
    return _OFFICIAL[folder]


def decoded_test_sha256(dataset: str, data_dir: str | Path | None = None) -> str:
    """sha256 of the test split's decoded uint8 images [N, 3, 32, 32]: the identity of a copy's pixels, shared by
    every copy decoded from the same bytes (the shared JPEG copy's npz records it as test_sha256)."""
    x, _, _ = load_split(dataset, "test", data_dir, note=False)
    return hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles only numpy arrays and plain containers, so a data file cannot run code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"{path} is missing: the data copy is incomplete")
    try:
        with open(path, "rb") as f:
            return _SafeUnpickler(f, encoding="latin1").load()
    except Exception as e:
        raise DataError(f"{path} is truncated or corrupt ({type(e).__name__}: {e}); replace the file") from None


def _unpickle_dict(path: Path) -> dict:
    """A batch or meta file, which the python format pickles as a dict; DataError for anything else."""
    entry = _unpickle(path)
    if not isinstance(entry, dict):
        raise DataError(f"{path} holds a pickled {type(entry).__name__}, not the dict of the python-format data "
                        "set; replace the file")
    return entry


def _batch_data(entry: dict, path: Path) -> np.ndarray:
    """A batch's 'data': uint8 [N, 3072], each row an image's red, green and blue planes; DataError otherwise."""
    data = entry.get("data")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{path}: 'data' must be a uint8 array of shape (N, 3072), "
                        f"got {getattr(data, 'dtype', type(data))} {getattr(data, 'shape', '')}")
    return data


def read_batch_images(path: str | Path) -> np.ndarray:
    """The images uint8 [N, 3, 32, 32] of one python-format (pickled) batch file, with or without labels, unpickled
    safely (numpy arrays and plain containers only); DataError when the file is not such a batch."""
    path = Path(path)
    return _batch_data(_unpickle_dict(path), path).reshape(-1, 3, 32, 32)


def _labels(y: object, path: Path, key: str, n: int) -> np.ndarray:
    """The labels of a batch as int64 [n]; DataError when they are missing, of another count, or not integers
    (strings, or floats that the conversion would truncate)."""
    values = np.asarray(y) if isinstance(y, (list, tuple, np.ndarray)) else None
    if values is None or values.ndim != 1 or len(values) != n:
        raise DataError(f"{path}: '{key}' must hold one integer label per image ({n:,}), got "
                        f"{type(y).__name__ if values is None else f'shape {list(values.shape)}'}")
    if values.dtype.kind in "iu":
        return values.astype(np.int64)
    kind = values.dtype.kind
    wrong = np.flatnonzero(~np.isfinite(values) | (values != np.round(values))) if kind == "f" else np.arange(n)
    if len(wrong):
        what = {"f": "fractional", "U": "string", "S": "bytes", "b": "boolean"}.get(kind, values.dtype.name)
        raise DataError(f"{path}: '{key}' must be integer labels, got {what} values (e.g. {values[wrong[0]].item()!r} "
                        f"for image {wrong[0]:,}); replace the file")
    return values.astype(np.int64)  # whole numbers stored as floats


@dataclass
class Data:
    """The splits of a run as on-device tensors: images uint8 [N, 3, 32, 32], labels int64 [N]."""

    train: tuple[Tensor, Tensor]
    val: tuple[Tensor, Tensor] | None
    test: tuple[Tensor, Tensor]
    classes: list[str]
    mean: Tensor
    std: Tensor

    def normalize(self, x: Tensor) -> Tensor:
        """Float images in [0, 1] [B, 3, H, W] -> standardized per channel."""
        return (x - self.mean) / self.std


def split_size(cfg: DataConfig, split: str) -> int:
    """The number of images a recipe's data section trains on (`split` "train": the training split less the
    validation images, or train_size) or tests on ("test": test_size, or the whole test split)."""
    if split == "train":
        return cfg.train_size if cfg.train_size is not None else SPLIT_SIZES["train"] - cfg.val_size
    return cfg.test_size if cfg.test_size is not None else SPLIT_SIZES["test"]


def load_data(cfg: DataConfig, data_dir: str | Path | None = None, device: str | torch.device = "cpu",
              note: bool = True) -> Data:
    """The train/val/test splits of a recipe, on `device`; val is the last `val_size` training images. `note`:
    say when the copy is not the official release (one rank of a distributed job says it). `cfg` is a recipe's,
    which Recipe.validate checks (DataConfig.validate)."""
    x, y, classes = load_split(cfg.dataset, "train", data_dir, note)
    xt, yt, _ = load_split(cfg.dataset, "test", data_dir, note)
    val = (x[len(x) - cfg.val_size:], y[len(x) - cfg.val_size:]) if cfg.val_size else None
    n_train, n_test = split_size(cfg, "train"), split_size(cfg, "test")
    return from_arrays((x[:n_train], y[:n_train]), val, (xt[:n_test], yt[:n_test]), classes, cfg.dataset, device)


def from_arrays(train: tuple, val: tuple | None, test: tuple, classes: list[str], dataset: str = "cifar10",
                device: str | torch.device = "cpu") -> Data:
    """Data from numpy/tensor arrays (uint8 NCHW images, integer labels): the loader, tests and tools share it."""
    to = lambda a, dtype: torch.as_tensor(np.asarray(a), dtype=dtype).to(device)
    split = lambda s: (to(s[0], torch.uint8), to(s[1], torch.int64)) if s is not None else None
    info = DATASETS[dataset]
    stats = lambda v: torch.tensor(v, device=device).view(1, 3, 1, 1)
    return Data(split(train), split(val), split(test), classes, stats(info.mean), stats(info.std))


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Optimizer steps in an epoch of `n` images: full batches only (one short batch when n < batch_size)."""
    return max(1, n // batch_size)


def steps_in(epochs: float, steps_per_epoch: int) -> int:
    """Optimizer steps in `epochs` (a whole or fractional number of) epochs: epochs x steps_per_epoch rounded up
    to a whole step, as airbench counts ceil(epochs x batches); rounded to 6 decimals first, so that float noise
    adds no step (1.1 epochs of 10 steps are 11 steps, not 12)."""
    return math.ceil(round(epochs * steps_per_epoch, 6))


def run_steps(epochs: float, steps_per_epoch: int) -> int:
    """Optimizer steps of an `epochs`-long run: `steps_in`, with at least one step in its last epoch, epoch
    ceil(epochs), which a fractional run stops part-way (whole-number epochs: epochs x steps_per_epoch)."""
    return max(steps_in(epochs, steps_per_epoch), (math.ceil(epochs) - 1) * steps_per_epoch + 1)


def batch_indices(n: int, batch_size: int, device: torch.device | str, generator: torch.Generator | None = None,
                  *, drop_last: bool = False, rank: int = 0, world_size: int = 1) -> list[Tensor]:
    """Index tensors of the batches of one epoch, shuffled by `generator` (in order without one).

    With several ranks every rank draws the same order and takes its 1/world_size of every batch.
    """
    order = (torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)).to(device)
    stop = n - n % batch_size if drop_last else n
    batches = [order[i:i + batch_size] for i in range(0, stop, batch_size)]
    return [b[rank::world_size] for b in batches] if world_size > 1 else batches
