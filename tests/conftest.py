"""Shared test fixtures: tiny recipes, learnable synthetic CIFAR-shaped data, a fake CIFAR-10 folder."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from budgetnet.config import load_recipe
from budgetnet.data.cifar import from_arrays
from budgetnet.training.rundir import MetricRow

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
TINY_MODEL = ["model.blocks=[1, 1]", "model.channels=8", "model.pool_size=16"]


def synthetic_arrays(n: int, seed: int = 0, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Learnable CIFAR-shaped uint8 images: each class has its own colour and stripe orientation, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, n)
    palette = np.random.default_rng(1234).integers(40, 216, (num_classes, 3))
    yy, xx = np.mgrid[0:32, 0:32]
    images = np.empty((n, 3, 32, 32), np.uint8)
    for k in range(num_classes):
        idx = labels == k
        stripes = np.sin((xx * np.cos(k) + yy * np.sin(k)) * 0.8) * 30
        base = palette[k][:, None, None] + stripes[None]
        noise = rng.normal(0, 25, (idx.sum(), 3, 32, 32))
        images[idx] = np.clip(base[None] + noise, 0, 255).astype(np.uint8)
    return images, labels.astype(np.int64)


@pytest.fixture
def tiny_data():
    """512 training and 256 test synthetic images on the CPU."""
    return from_arrays(synthetic_arrays(512, seed=0), None, synthetic_arrays(256, seed=1), CLASSES)


def tiny_recipe(*overrides: str):
    """A 2-stage, 8-channel ResNet trained for 2 epochs with batch 64 (a few seconds on a CPU)."""
    return load_recipe("demo", [*TINY_MODEL, "epochs=2", "batch_size=64", "eval_batch_size=256",
                                "data.train_size=null", *overrides])


class Crash(Exception):
    """A stand-in for a crash mid-run, raised by `crash_after`."""


def crash_after(epoch: int):
    """An on_epoch callback that raises Crash once `epoch` has finished (its checkpoint and row are written)."""
    def on_epoch(row: MetricRow) -> None:
        if row.epoch == epoch:
            raise Crash

    return on_epoch


def write_fake_cifar10(root: Path) -> Path:
    """A structurally valid cifar-10-batches-py/ (50,000 + 10,000 learnable synthetic images) under root."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    x, y = synthetic_arrays(60_000, seed=2)
    for i in range(6):
        name = f"data_batch_{i + 1}" if i < 5 else "test_batch"
        sl = slice(i * 10_000, (i + 1) * 10_000)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": x[sl].reshape(10_000, -1), "labels": y[sl].tolist(),
                         "batch_label": name, "filenames": [f"{j}.png" for j in range(10_000)]}, f, protocol=2)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CLASSES, "num_cases_per_batch": 10_000, "num_vis": 3072}, f, protocol=2)
    return root


@pytest.fixture(scope="session")
def fake_cifar(tmp_path_factory) -> Path:
    """Root of a fake CIFAR-10 folder, written once per test session."""
    return write_fake_cifar10(tmp_path_factory.mktemp("fake_cifar"))


@pytest.fixture(scope="session")
def real_cifar() -> Path:
    """The real CIFAR-10 root from $BUDGETNET_DATA; skips when it is not there."""
    root = os.environ.get("BUDGETNET_DATA")
    if not root or not (Path(root) / "cifar-10-batches-py" / "test_batch").is_file():
        pytest.skip("real CIFAR-10 not available: set BUDGETNET_DATA to a folder holding cifar-10-batches-py/")
    return Path(root)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A run directory holding a tiny model trained by a plain loop (no budgetnet training code) on synthetic images
    of the fake CIFAR-10's kind, far above chance on them, with class names: for checks of eval, robustness and
    predict against an independent computation."""
    import torch

    from budgetnet import __version__
    from budgetnet.design.model import ResNet
    from budgetnet.training import checkpoint

    recipe = load_recipe("demo", [*TINY_MODEL, "epochs=1"])
    torch.manual_seed(0)
    model = ResNet(recipe.model)
    x, y = synthetic_arrays(1024, seed=5)
    mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
    std = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)
    images, labels = (torch.from_numpy(x).float() / 255 - mean) / std, torch.from_numpy(y)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for epoch in range(2):
        for i in range(0, len(images), 64):
            loss = torch.nn.functional.cross_entropy(model(images[i:i + 64]), labels[i:i + 64])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    run = tmp_path_factory.mktemp("trained") / "run"
    checkpoint.save({"model": model.state_dict(), "epoch": 1, "recipe": recipe.to_dict(), "classes": CLASSES,
                     "budgetnet_version": __version__}, run / "checkpoints" / "best.pt")
    return run
