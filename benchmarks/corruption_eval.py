"""Corruption evaluation time: the first `eval --corruptions` call (generates CIFAR-10-C into the cache) against a
later one (reads the cache), beside the clean evaluation of the same model.

    python benchmarks/corruption_eval.py [--limit 1000] [--recipe demo] [--data DIR] [--device cpu] [--json]

The model is the recipe's design with random weights (evaluation time does not depend on the weights), saved as a
run directory in a temporary folder. Images: CIFAR-10's test split from --data or $BUDGETNET_DATA if set, else
10,000 random uint8 images in a temporary fake copy. The cache is a fresh temporary folder, so the first call
always generates. Seconds are wall time, measured once each (a loaded machine shows in the figures).
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from budgetnet.config import load_recipe
from budgetnet.data.cifar import DATASETS
from budgetnet.design.model import ResNet, count_trainable
from budgetnet.evaluation.evaluate import evaluate_run
from budgetnet.evaluation.robustness import robustness
from budgetnet.training import checkpoint
from budgetnet.training.rundir import RunFiles


def fake_cifar10(root: Path) -> Path:
    """A cifar-10-batches-py/ whose test split is 10,000 random images (the training files are empty: the
    evaluation reads the test split only)."""
    info = DATASETS["cifar10"]
    folder = root / info.folder
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in info.train_files:
        (folder / name).write_bytes(b"")
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": rng.integers(0, 256, (10_000, 3072), dtype=np.uint8),
                     "labels": rng.integers(0, 10, 10_000).tolist()}, f)
    with open(folder / info.meta_file, "wb") as f:
        pickle.dump({info.names_key: [f"class {i}" for i in range(10)]}, f)
    return root


def timed(fn, *args, **kwargs) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=1000, help="test images per corruption and severity")
    parser.add_argument("--recipe", default="demo", help="recipe whose design is evaluated (default: %(default)s)")
    parser.add_argument("--data", help="folder holding cifar-10-batches-py/ (default: $BUDGETNET_DATA, else fake)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON instead of a table")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = args.data or os.environ.get("BUDGETNET_DATA") or fake_cifar10(tmp / "data")
        recipe = load_recipe(args.recipe)
        torch.manual_seed(0)
        model = ResNet(recipe.model)
        run = tmp / "run"
        checkpoint.save({"model": model.state_dict(), "epoch": 1, "recipe": recipe.to_dict(),
                         "classes": [f"class {i}" for i in range(10)], "budgetnet_version": "0.2.0"},
                        RunFiles(run).best)
        common = dict(data_dir=data, device=args.device, out_dir=tmp / "eval", corruptions=True, calibration=False,
                      limit=args.limit, progress=False, corruption_cache=tmp / "cache")
        clean = timed(evaluate_run, run, data, args.device, out_dir=tmp / "eval")
        first = timed(robustness, run, **common)
        cached = timed(robustness, run, **common)
    params = count_trainable(model)
    result = {"recipe": args.recipe, "params": params, "device": args.device,
              "images_per_corruption": args.limit, "clean_eval_s (10,000 images)": round(clean, 2),
              "corruptions_first_call_s": round(first, 2), "corruptions_cached_call_s": round(cached, 2)}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{args.recipe} design, {params:,} parameters, on {args.device}; 15 corruptions x 5 severities "
          f"x {args.limit:,} images\n")
    print("| clean eval (10,000 images) | corruptions, first call (generates) | corruptions, cached call |")
    print("|---:|---:|---:|")
    print(f"| {clean:.1f} s | {first:.1f} s | {cached:.1f} s |")


if __name__ == "__main__":
    main()
