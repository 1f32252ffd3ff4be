"""What training an experiment costs on this device: an epoch of each distinct recipe timed on the training loop
itself, and the table of the runs still to train."""
from __future__ import annotations

import contextlib
import copy
import json
import os
import time

import torch

from ...config import Recipe
from ...data.cifar import from_arrays, split_size, steps_per_epoch
from ...training.loop import train_without_rundir
from ...training.rundir import MetricRow, RunFiles
from ...training.runtime import resolve_device
from .plan import TO_TRAIN, PlannedRun, run_status


def _cost_key(recipe: Recipe) -> str:
    """What an epoch's cost depends on: the recipe without its seed, length, schedule and learning rate."""
    key = {k: v for k, v in recipe.to_dict().items() if k not in ("seed", "epochs", "schedule", "description")}
    key["optimizer"] = key["optimizer"]["name"]
    return json.dumps(key, sort_keys=True)


class _Measured(Exception):
    """Raised by measure_epoch_seconds's epoch callback once its timed epoch is done, to stop the loop there."""


def measure_epoch_seconds(recipe: Recipe, steps: int = 3) -> float:
    """Seconds one epoch of `recipe` (its training steps, then its evaluation every `eval_every` epochs) takes on
    its device, timed on the training loop itself: `train_without_rundir` trains `recipe` (at least 2 epochs,
    evaluating each) on `steps` batches of random images and one evaluation batch, nothing written; the first
    epoch warms up (compilation, cudnn's kernel choice), the second is timed, its training steps and its
    evaluation apart, and both are scaled to the recipe's data sizes."""
    device = resolve_device(recipe.device)
    probe = copy.deepcopy(recipe)
    probe.epochs, probe.eval_every = max(2, recipe.epochs), 1
    n_train = split_size(recipe.data, "train")
    n_eval = split_size(recipe.data, "test") + recipe.data.val_size
    n_probe_eval = min(recipe.eval_batch_size, n_eval)
    gen = torch.Generator().manual_seed(0)
    classes = recipe.model.num_classes

    def random_split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (n, recipe.model.in_channels, recipe.model.image_size, recipe.model.image_size)
        return (torch.randint(0, 256, shape, dtype=torch.uint8, generator=gen),
                torch.randint(0, classes, (n,), generator=gen))

    data = from_arrays(random_split(steps * recipe.batch_size), None, random_split(n_probe_eval),
                       [str(c) for c in range(classes)], recipe.data.dataset, device)
    ends: list[tuple[float, MetricRow]] = []  # (when, row) at the end of each epoch, its evaluation included

    def on_epoch(row: MetricRow) -> None:
        ends.append((time.perf_counter(), row))
        if len(ends) == 2:
            raise _Measured

    with contextlib.suppress(_Measured):
        train_without_rundir(probe, data=data, on_epoch=on_epoch)
    (warm_end, _), (timed_end, row) = ends
    step_seconds = row.seconds / steps
    eval_seconds = timed_end - warm_end - row.seconds
    return (steps_per_epoch(n_train, recipe.batch_size) * step_seconds
            + n_eval / n_probe_eval * eval_seconds / recipe.eval_every)


def cost_plan(runs: list[PlannedRun], jobs: int = 1, steps: int = 3) -> str:
    """A table of what training the runs that are not done costs on this device: per run the epochs left and
    the seconds per epoch measured with a few steps (once per distinct cost), and the total."""
    measured: dict[str, float] = {}
    lines = [f"{'run':<48} {'status':<9} {'epochs':>6} {'s/epoch':>9} {'seconds':>9}"]
    total = 0.0
    for run in runs:
        status = run_status(run)
        left = 0 if status not in TO_TRAIN else run.recipe.epochs - (_epochs_done(run) if status == "resume" else 0)
        seconds = None
        if left:
            key = _cost_key(run.recipe)
            if key not in measured:
                measured[key] = measure_epoch_seconds(run.recipe, steps)
            seconds = measured[key] * left
            total += seconds
        per_epoch = f"{measured[_cost_key(run.recipe)]:.1f}" if left else "-"
        lines.append(f"{run.path.name[:48]:<48} {status:<9} {left:>6g} {per_epoch:>9} "
                     f"{'-' if seconds is None else f'{seconds:.0f}':>9}")
    device = resolve_device(runs[0].recipe.device) if runs else "cpu"
    name = torch.cuda.get_device_name(device) if torch.cuda.is_available() and str(device).startswith("cuda") \
        else f"{os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads"
    lines.append(f"total {total:.0f} s = {hours(total)} of training on {device} ({name}), "
                 f"about {hours(total / jobs)} with {jobs} at a time; seconds per epoch measured with {steps} "
                 "steps of the training loop on random images after as many to warm up (data loading, compilation "
                 "and checkpoints not included)")
    return "\n".join(lines)


def _epochs_done(run: PlannedRun) -> int:
    summary = RunFiles(run.path).read_summary()
    return (summary.epochs_done or 0) if summary is not None else 0


def hours(seconds: float) -> str:
    """Seconds as minutes, or hours from an hour on."""
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"
