"""Batch prediction throughput: `budgetnet predict` on an .npy into a CSV file, beside `eval`'s scoring, on the CPU.

    python benchmarks/predict_throughput.py [--images 10000] [--recipe small] [--threads 1] [--smoke]

Images/s of three ways to classify the same synthetic CIFAR-sized uint8 images with the same model (a recipe's
network, randomly initialized: the speed does not depend on the weights):

- predict: what `budgetnet predict RUN images.npy --csv out.csv` does once the checkpoint is loaded: read the .npy
  by memory map in batches of --batch-size, classify, write the top-3 rows through a temporary file;
- eval scoring: the forward passes of `budgetnet eval` (training.scoring.predict_logits on the images already in
  memory, the recipe's eval_batch_size, precision and test-time augmentation: flip_translate is 6 views an image);
- eval scoring, one view: the same with tta=none, the work predict does.

--smoke: 200 images, for CI. The figures depend on what else runs on the machine; the load average is printed.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from budgetnet import __version__
from budgetnet.config import load_recipe
from budgetnet.data.cifar import from_arrays
from budgetnet.deploy.predict import Predictor, write_csv
from budgetnet.design.model import ResNet
from budgetnet.training import checkpoint
from budgetnet.training.scoring import TTA_VIEWS, predict_logits

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_run(root: Path, recipe_name: str) -> Path:
    """A run directory holding a randomly initialized model of the recipe, as training writes it."""
    recipe = load_recipe(recipe_name)
    torch.manual_seed(0)
    model = ResNet(recipe.model)
    checkpoint.save({"model": model.state_dict(), "epoch": 0, "recipe": recipe.to_dict(), "classes": CLASSES,
                     "budgetnet_version": __version__}, root / "run" / "checkpoints" / "best.pt")
    return root / "run"


def predict_ips(run: Path, array: Path, out: Path, batch_size: int) -> tuple[float, int]:
    """(images/s, rows written) of predict from .npy to CSV, the model loaded."""
    predictor = Predictor(run, top_k=3, device="cpu")
    start = time.perf_counter()
    rows = write_csv(out, predictor.predict([str(array)], batch_size, progress=False), predictor.top_k)
    return rows / (time.perf_counter() - start), rows


def eval_ips(run: Path, images: np.ndarray, tta: str | None) -> tuple[float, int, int]:
    """(images/s, batch size, views) of eval's scoring, the model loaded and the images on the device (as eval holds
    them), with the recipe's test-time augmentation or `tta`."""
    model, recipe, _ = checkpoint.load_model(run, device="cpu")
    nchw = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    data = from_arrays((nchw[:0], np.zeros(0)), None, (nchw, np.zeros(len(nchw))), CLASSES)
    tta = tta or recipe.tta
    views = TTA_VIEWS[tta]
    start = time.perf_counter()
    predict_logits(model, nchw, data, recipe.eval_batch_size, torch.device("cpu"), precision=recipe.precision, tta=tta)
    return len(nchw) / (time.perf_counter() - start), recipe.eval_batch_size, views


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--recipe", default="small", help="whose network is timed (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=256, help="predict's --batch-size (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    parser.add_argument("--smoke", action="store_true", help="200 images: check that it runs (CI)")
    args = parser.parse_args()
    n = 200 if args.smoke else args.images
    torch.set_num_threads(args.threads)
    images = np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run = write_run(root, args.recipe)
        np.save(root / "images.npy", images)
        ours, rows = predict_ips(run, root / "images.npy", root / "predictions.csv", args.batch_size)
        assert rows == n, f"predict wrote {rows} rows for {n} images"
        table = [("predict (.npy to CSV)", ours, args.batch_size, 1),
                 ("eval scoring", *eval_ips(run, images, None)),
                 ("eval scoring, one view", *eval_ips(run, images, "none"))]
    print(f"{n:,} synthetic 32x32 images, recipe {args.recipe!r} (random weights), CPU, torch threads "
          f"{torch.get_num_threads()}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'path':<26}{'images/s':>10}{'batch':>8}{'views':>7}")
    for name, ips, batch, views in table:
        print(f"{name:<26}{ips:>10,.0f}{batch:>8}{views:>7}")


if __name__ == "__main__":
    main()
