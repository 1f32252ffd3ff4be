"""Robustness of a run: accuracy under the CIFAR-10-C corruptions, calibration, and a comparison across runs."""
from __future__ import annotations

from pathlib import Path

import torch

from ..data.cifar import default_cache, from_arrays, load_split
from ..errors import UsageError
from ..training.checkpoint import load_model
from ..training.rundir import EvalRecord, RunFiles
from ..training.runtime import resolve_device
from ..training.scoring import predict_logits
from .calibration import expected_calibration_error, reliability_diagram
from .corruptions import CORRUPTIONS, corruption_suite, plot_corruption_heatmap
from .evaluate import eval_files, evaluate_run


def evaluate_all(run: str | Path, data_dir: str | Path | None = None, *, device: str = "auto", which: str = "best",
                 out_dir: str | Path | None = None, corruptions: bool = False, calibration: bool = False,
                 cifar10c_dir: str | Path | None = None, severities: tuple[int, ...] = (1, 2, 3, 4, 5),
                 limit: int | None = None, progress: bool = True) -> EvalRecord:
    """`budgetnet eval`: test accuracy, per class and confusion (eval.json, confusion.png), then, when asked,
    corruption accuracy and calibration merged into the same eval.json. `limit` is for those two (the test accuracy
    is always the whole test set's): without them it is refused, as is one below 1."""
    if limit is not None and not (corruptions or calibration):
        raise UsageError(f"--limit {limit} is for --corruptions and --calibration (the test accuracy is always the "
                         "whole test set's): add one, or drop --limit")
    check_limit(limit)
    result = evaluate_run(run, data_dir, device, which, out_dir)
    if corruptions or calibration:
        result = robustness(run, data_dir, device=device, which=which, out_dir=out_dir, corruptions=corruptions,
                            calibration=calibration, cifar10c_dir=cifar10c_dir, severities=severities, limit=limit,
                            progress=progress)
    return result


def robustness(run: str | Path, data_dir: str | Path | None = None, *, device: str = "auto", which: str = "best",
               out_dir: str | Path | None = None, corruptions: bool = True, calibration: bool = True,
               cifar10c_dir: str | Path | None = None, severities: tuple[int, ...] = (1, 2, 3, 4, 5),
               limit: int | None = None, batch_size: int | None = None, progress: bool = True,
               corruption_cache: str | Path | None = None) -> EvalRecord:
    """Corruption accuracy (CIFAR-10-C, generated or read from cifar10c_dir) and calibration of a run; merged into
    the run's eval.json, with corruptions.png and reliability.png beside it. `limit`: first N test images only;
    `batch_size`: images per forward pass (default: the recipe's eval_batch_size). Generated corruptions are cached
    in the release's layout under `corruption_cache` (default: <cache>/corruptions, the cache being
    $XDG_CACHE_HOME/budgetnet or ~/.cache/budgetnet), so that only the first evaluation of a test set generates
    them."""
    check_limit(limit)
    dev = resolve_device(device)
    model, recipe, _ = load_model(run, which, dev)
    x, y, classes = load_split(recipe.data.dataset, "test", data_dir)
    x, y = x[:limit], y[:limit]
    data = from_arrays((x[:0], y[:0]), None, (x, y), classes, recipe.data.dataset, dev)
    files = eval_files(run, out_dir)
    result = files.read_eval() or EvalRecord(run=str(run))

    def logits_of(images_nhwc):
        images = torch.from_numpy(images_nhwc).permute(0, 3, 1, 2).contiguous()
        return predict_logits(model, images, data, batch_size or recipe.eval_batch_size, dev,
                              precision=recipe.precision, tta=recipe.tta, tta_fraction=recipe.tta_fraction).cpu()

    if calibration:
        probs = logits_of(x.transpose(0, 2, 3, 1)).softmax(1)
        result.ece = expected_calibration_error(probs, torch.from_numpy(y))
        result.ece_images = len(y)
        reliability_diagram(probs, torch.from_numpy(y), files.reliability_plot,
                            title=f"reliability, {len(y):,} test images")
    if corruptions:
        suite = corruption_suite(x.transpose(0, 2, 3, 1), y,
                                 lambda im, t: (logits_of(im).argmax(1).numpy() == t).mean(),
                                 names=CORRUPTIONS, severities=severities, cifar10c_dir=cifar10c_dir,
                                 progress=progress, limit=limit,
                                 cache_dir=corruption_cache or default_cache() / "corruptions")
        result.corruption_accuracy, result.corruption_error = suite["corruption_accuracy"], suite["corruption_error"]
        result.per_corruption, result.corruption_source = suite["per_corruption"], suite["source"]
        result.corruption_images, result.corruptions_generated = suite["num_images"], suite["generated"]
        result.corruptions_read, result.corruptions_skipped = suite["read"], suite["skipped"]
        plot_corruption_heatmap(suite, files.corruptions_plot,
                                f"corruption error, {suite['source']}, {suite['num_images']:,} images each")
    files.write_eval(result)
    return result


def eval_text(run: str, result: EvalRecord) -> str:
    """`budgetnet eval`'s text: accuracy, per-class accuracy, and calibration and corruption errors when measured."""
    lines = [f"{run}: test accuracy {result.accuracy:.4f}, loss {result.loss:.4f}, "
             f"{result.params:,} parameters (checkpoint of epoch {result.checkpoint_epoch})"]
    lines += [f"  {name:<12} {acc:.4f}" for name, acc in result.per_class_accuracy.items()]
    if result.ece is not None:
        lines.append(f"expected calibration error {result.ece:.4f} ({result.ece_images:,} images)")
    if result.per_corruption is not None:
        lines.append(f"corruption accuracy {result.corruption_accuracy:.4f} ({result.corruption_source}, "
                     f"{result.corruption_images:,} images each); error (%):")
        columns = next(iter(result.per_corruption.values()))
        lines.append(f"  {'corruption':<18} " + " ".join(f"{k:>5}" for k in columns))
        lines += [f"  {name:<18} " + " ".join(f"{100 * (1 - v):5.1f}" for v in acc.values())
                  for name, acc in result.per_corruption.items()]
        lines += [f"  {name:<18} skipped: {why}" for name, why in (result.corruptions_skipped or {}).items()]
    return "\n".join(lines)


def check_limit(limit: int | None) -> None:
    """Raise UsageError unless `limit` (test images) is None or 1 or more."""
    if limit is not None and limit < 1:
        raise UsageError(f"--limit {limit}: give 1 or more test images (or leave it out for all)")


def compare_robustness(run_dirs: list[str | Path], out_dir: str | Path) -> Path:
    """out_dir/robustness.png: the corruption-error heat maps of runs side by side, read from their eval.json."""
    measured = []
    for run in map(Path, run_dirs):
        evaluation = RunFiles(run).read_eval()
        if evaluation is None or evaluation.per_corruption is None:
            raise UsageError(f"{run}: no corruption results; run `budgetnet eval {run} --corruptions` first")
        measured.append((run.name, {"per_corruption": evaluation.per_corruption,
                                    "corruption_error": evaluation.corruption_error}))
    return plot_corruption_heatmap(measured, Path(out_dir) / "robustness.png", "corruption error by run")
