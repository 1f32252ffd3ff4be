"""One trial of the search: a design sampled within the parameter and compute budgets (its widths last, each
within the widest that fits; an over-budget design repaired or rejected untrained), trained in its run directory, each epoch's
validation accuracy reported to the pruner, and the best one returned to the sampler; its parameters, GFLOP per
image, training PFLOP and seconds recorded as user attrs."""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NoReturn

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from ...config import Recipe
from ...data.cifar import Data, load_data
from ...design.spec import BudgetError, SpecError
from ...training.checkpoint import load_model
from ...training.loop import check_recipe, train
from ...training.rundir import MetricRow, RunFiles, RunSummary
from ...training.runtime import resolve_device
from ...training.scoring import predict_logits
from .errors import RunDirRefused
from .space import Space, fit_design, narrowest_widths, width_keys
from .storage import TrialAttrs, pack_correct


@dataclass
class Objective:
    """What Optuna calls per trial: train the trial's design in OUT/trials/<number> (a queued retry resumes the
    run directory it inherits, which must lie under OUT: `run_path`) and return its best validation accuracy; a
    trial whose values an earlier completed trial had returns that trial's accuracy untrained.

    `check_signal` raises Interrupted once Ctrl-C or SIGTERM asked the worker to stop
    (interrupts.StopRequest); it is called as a trial starts and after each epoch. `data` replaces loading the
    data set (tests); otherwise each data configuration is loaded once and kept."""

    space: Space
    out: Path
    budget: int | None
    max_gflops: float | None
    repair: str
    device: str
    check_signal: Callable[[], None]
    data_dir: str | Path | None = None
    data: Data | None = None
    progress: bool = False
    running: int | None = None  # the number of the trial this process is training
    datasets: dict[tuple, Data] = field(default_factory=dict)

    def __call__(self, trial: optuna.Trial) -> float:
        self.running = trial.number
        self.check_signal()
        inherited = TrialAttrs.of(trial).run_dir  # a queued retry inherits its run directory (relative to OUT)
        resumed = inherited is not None
        run_dir = inherited if resumed else f"trials/{trial.number}"
        try:
            path = run_path(self.out, run_dir)
        except RunDirRefused as e:
            TrialAttrs.record(trial, failed=str(e))
            raise
        recipe = _trial_recipe(trial, self.space, self.budget, self.max_gflops, self.repair)
        earlier = _same_values(trial)
        if earlier is not None:  # TPE samples its best point again: the same training would give the same result
            TrialAttrs.record(trial, duplicate_of=earlier.number)
            return earlier.value
        # the whole recipe: reproducible from the study alone, whatever disk OUT is on
        TrialAttrs.record(trial, run_dir=run_dir, recipe=recipe.to_dict())
        recipe.device = self.device
        check_recipe(recipe)  # a combination of sampled values that cannot run fails before its data is loaded
        key = (self.device, *vars(recipe.data).values())
        if self.data is None and key not in self.datasets:
            self.datasets[key] = load_data(recipe.data, self.data_dir, resolve_device(self.device))

        files = RunFiles(path)
        resume = resumed and files.recipe.is_file()
        backfill = resume  # a resumed run reports its earlier epochs first, so the pruner sees the whole curve

        def on_epoch(row: MetricRow) -> None:
            nonlocal backfill
            self.check_signal()
            _record_compute(trial, files.read_summary())  # a pruned trial keeps what it spent
            for r in files.read_metrics() if backfill else [row]:
                if r.val_acc is not None:
                    trial.report(r.val_acc, r.epoch)
            backfill = False
            last = row.epoch >= math.ceil(recipe.epochs)  # stopping a trial that has finished saves nothing
            if row.val_acc is not None and not last and trial.should_prune():
                raise optuna.TrialPruned(f"val acc {row.val_acc:.4f} after epoch {row.epoch}")

        if resumed and not resume:
            print(f"trial {trial.number} retries a failed trial whose run directory {run_dir} is not under {self.out} "
                  "(not started yet, or --out is not shared by every worker): training it from the start",
                  file=sys.stderr)
        data = self.datasets[key] if self.data is None else self.data
        summary = train(None if resume else recipe, path, self.data_dir, resume=resume,
                        progress=self.progress, on_epoch=on_epoch, data=data,
                        overrides=[f"device={self.device}"] if resume else ())  # this worker's device, not the last's
        TrialAttrs.record(trial, test_acc=summary.final_test_acc, val_correct=_val_correct(path, data, self.device))
        _record_compute(trial, summary)
        return summary.best_acc


def run_path(out: Path, run_dir: object) -> Path:
    """OUT/`run_dir`, the run directory a study's storage records for a trial, once it is known to lie inside OUT
    (relative, and inside once every `..` and symbolic link is resolved); RunDirRefused otherwise, since the
    storage may be shared or edited and a worker writes only under its own --out."""
    where = Path(out) / str(run_dir)
    inside = Path(out).resolve()
    if (not isinstance(run_dir, str) or Path(run_dir).is_absolute()
            or not where.resolve().is_relative_to(inside) or where.resolve() == inside):
        raise RunDirRefused(f"the study records run directory {run_dir!r} for this trial, which is not inside --out "
                            f"{out} (an absolute path, '..' or a link leading out): refused, nothing written there")
    return where


def _val_correct(run: Path, data: Data, device: str) -> str:
    """Which validation images the run's best epoch (best.pt, whose accuracy the trial returns) gets right, scored
    as the training loop scores them, packed for the storage."""
    dev = resolve_device(device)
    model, recipe, _ = load_model(run, "best", dev)
    model = model.to(memory_format=torch.channels_last if recipe.channels_last else torch.contiguous_format)
    images, labels = data.val
    logits = predict_logits(model, images, data, recipe.eval_batch_size, dev,
                            precision=recipe.precision, tta=recipe.tta, tta_fraction=recipe.tta_fraction)
    return pack_correct(logits.argmax(1).cpu() == labels.cpu())


def _record_compute(trial: optuna.Trial, summary: RunSummary | None) -> None:
    """The trial's training so far, from its run summary: PFLOP (GFLOP per image x images trained on) and seconds
    (nothing before the run wrote a summary)."""
    if summary is not None:
        TrialAttrs.record(trial, train_pflop=summary.train_pflop, train_seconds=summary.train_seconds)


def _trial_recipe(trial: optuna.Trial, space: Space, budget: int | None, max_gflops: float | None,
                  repair: str) -> Recipe:
    """Sample the trial's recipe within the budgets, or prune the trial with the reason.

    The widths (C_1, or each stage's width) are sampled last, each from its range cut at the widest that fits
    (`fit_design`; a repaired width from the fitted value itself): the value the study records is the value
    trained, so TPE and the importances reason about trained designs, and no draw is lost over a budget (the range
    differs between trials; Optuna allows that for a numeric parameter)."""
    widths = width_keys(space)
    values = space.suggest(trial, skip=tuple(widths))
    try:
        recipe = space.recipe({**values, **narrowest_widths(space)})
    except SpecError as e:
        _reject(trial, "invalid_design", str(e))
    if budget is not None:
        recipe.budget = budget
    if max_gflops is not None:
        recipe.max_gflops = max_gflops
    try:
        recipe.model, repaired = fit_design(space, recipe.model, recipe.budget, recipe.max_gflops, repair,
                                            lambda key, d: trial.suggest_int(key, d.low, d.high, step=d.step,
                                                                             log=d.log))
    except BudgetError as e:
        _reject(trial, "over_budget", str(e))
    if repaired:
        TrialAttrs.record(trial, repaired=repaired)
    design = recipe.model.to_dict()
    TrialAttrs.record(trial, params=recipe.model.count_params(), gflop_per_image=recipe.model.gflop_per_image(),
                      design={k: design[k] for k in ("blocks", "channels", "kernel_size", "shortcut_kernel_size",
                                                     "pool_size", "block")})
    return recipe


def _same_values(trial: optuna.Trial) -> FrozenTrial | None:
    """The earliest trained and completed trial of the study whose sampled values are the trial's, if any."""
    for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.params == trial.params and TrialAttrs.of(t).duplicate_of is None:
            return t
    return None


def _reject(trial: optuna.Trial, reason: str, message: str) -> NoReturn:
    """Prune before training (pruned rather than failed, so that the sampler learns to avoid the region)."""
    TrialAttrs.record(trial, rejected=reason, reason=message)
    raise optuna.TrialPruned(f"{reason}: {message}")
