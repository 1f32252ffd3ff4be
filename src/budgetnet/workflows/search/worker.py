"""One search worker: this process runs trials of the study (created on first use) until its own or the study's
target is met, with one stderr line per trial; stopped by SIGINT or SIGTERM, it queues its trial to resume."""
from __future__ import annotations

import signal
import sys
from pathlib import Path

import optuna
from optuna.study import MaxTrialsCallback
from optuna.trial import FrozenTrial, TrialState

from ...config import Recipe, RecipeError, parse_count, parse_gflops
from ...data.cifar import Data
from ...training.interrupts import stop_on_signals
from ...training.loop import TrainingDiverged
from .errors import RunDirRefused, SearchInterrupted
from .gpu import worker_device
from .objective import Objective
from .space import Space, check_budget
from .storage import TrialAttrs, open_storage, optuna_quiet, retry_trial, storage_url

SAMPLERS = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}
PRUNERS = {  # each built to stop no trial before the space's prune_from_epoch
    "hyperband": lambda start: optuna.pruners.HyperbandPruner(min_resource=start),
    "halving": lambda start: optuna.pruners.SuccessiveHalvingPruner(min_resource=start),
    "median": lambda start: optuna.pruners.MedianPruner(n_warmup_steps=start),
    "none": lambda start: optuna.pruners.NopPruner()}
REPAIRS = ("fit-channels", "reject")
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)  # what --total-trials counts


@optuna_quiet()
def run_search(space: Space, out: str | Path, *, trials: int | None = None, total_trials: int | None = None,
               storage: str | None = None, study_name: str | None = None, budget: int | str | None = None,
               sampler: str = "tpe", pruner: str = "hyperband", repair: str = "fit-channels", seed: int | None = None,
               heartbeat: int = 60, device: str | None = None, data_dir: str | Path | None = None,
               data: Data | None = None, progress: bool = False, max_gflops: float | str | None = None
               ) -> optuna.Study:
    """Run trials of the study (created on first use) in this process until either target is met; returns the study.

    `trials` caps this process; `total_trials` is the study-wide target shared by all workers (trials finished
    or running, Optuna's MaxTrialsCallback). Workers on other machines run the same call against the same
    storage. `budget` (parameters) and `max_gflops` (forward+backward GFLOP per image) override the space's
    budgets; a design over either is never trained. `device` overrides the recipes' ('auto': a GPU of its own).
    `data` replaces loading the data set (tests); otherwise every data configuration is loaded once per process.
    SIGINT and SIGTERM stop the work at the next safe point with SearchInterrupted, after the running trial is
    marked failed and queued to resume.
    """
    for flag, value, known in (("--sampler", sampler, SAMPLERS), ("--pruner", pruner, PRUNERS)):
        if value not in known:
            raise RecipeError(f"{flag} {value}: use one of {', '.join(known)}")
    check_trials(trials, total_trials)
    if heartbeat < 1:
        raise RecipeError(f"--heartbeat {heartbeat}: give 1 or more")
    if seed is not None and not 0 <= seed < 2**32:
        raise RecipeError(f"--seed {seed}: give a number from 0 to {2**32 - 1:,} (numpy's seeds, which Optuna's "
                          "samplers use)")
    budget, max_gflops = search_budgets(space, budget, max_gflops, repair)
    out = Path(out)
    storage = storage_url(out, storage)
    with stop_on_signals() as stop:  # looked at before the first trial, between trials, after each epoch and step
        out.mkdir(parents=True, exist_ok=True)
        study = optuna.create_study(storage=open_storage(storage, heartbeat), study_name=study_name or space.name,
                                    direction="maximize", sampler=_sampler(sampler, seed),
                                    pruner=PRUNERS[pruner](space.prune_from_epoch), load_if_exists=True)
        study.set_user_attr("space", space.name)
        study.set_user_attr("budget", budget or parse_count(space.base.get("budget", Recipe.budget)))
        study.set_user_attr("max_gflops", max_gflops or space.base.get("max_gflops"))
        target = [MaxTrialsCallback(total_trials, states=COUNTED)] if total_trials is not None else []
        target.append(_say_trial)
        if total_trials is not None:
            optuna.storages.fail_stale_trials(study)
            if len(study.get_trials(deepcopy=False, states=COUNTED)) >= total_trials:
                return study
        device, gpu_lock = worker_device(device or space.base.get("device", Recipe.device))
        objective: Objective | None = None  # a stop requeues the trial it is running
        try:
            stop.check()
            objective = Objective(space, out, budget, max_gflops, repair, device, stop.check, data_dir, data,
                                  progress)
            study.optimize(objective, n_trials=trials, callbacks=[stop.check, *target],
                           catch=(TrainingDiverged, RunDirRefused), gc_after_trial=True)
        except KeyboardInterrupt as e:
            running = objective.running if objective is not None else None
            raise SearchInterrupted(_requeue(study, running), getattr(e, "signum", signal.SIGINT)) from None
        finally:
            if gpu_lock is not None:
                gpu_lock.close()
    return study


def check_trials(trials: int | None, total_trials: int | None) -> None:
    """RecipeError unless the trials to run are said, each 1 or more."""
    if trials is None and total_trials is None:
        raise RecipeError("say how many trials: --trials N (this worker) and/or --total-trials N (the whole study)")
    for flag, n in (("--trials", trials), ("--total-trials", total_trials)):
        if n is not None and n < 1:
            raise RecipeError(f"{flag} {n}: give 1 or more")


def search_budgets(space: Space, budget: int | str | None, max_gflops: float | str | None,
                   repair: str) -> tuple[int | None, float | None]:
    """The budgets given (None: the space's), parsed, after checking that some design of the space fits them."""
    if repair not in REPAIRS:
        raise RecipeError(f"--repair {repair}: use one of {', '.join(REPAIRS)}")
    budget = parse_count(budget) if budget is not None else None
    max_gflops = parse_gflops(max_gflops) if max_gflops is not None else None
    check_budget(space, budget, repair, max_gflops)
    return budget, max_gflops


def _sampler(name: str, seed: int | None) -> optuna.samplers.BaseSampler:
    """TPE lies constantly about running trials, so that parallel workers do not sample the same region."""
    return SAMPLERS[name](seed=seed, constant_liar=True) if name == "tpe" else SAMPLERS[name](seed=seed)


def _say_trial(study: optuna.Study, trial: FrozenTrial) -> None:
    """One stderr line per finished trial, in budgetnet's terms (Optuna's own log shows errors only)."""
    attrs = TrialAttrs.of(trial)
    size = f", {attrs.params:,} params" if attrs.params is not None else ""
    if trial.state == TrialState.COMPLETE and attrs.duplicate_of is not None:
        line = f"trial {attrs.duplicate_of}'s values again: its val acc {trial.value:.4f}, not trained again"
    elif trial.state == TrialState.COMPLETE:
        line = f"val acc {trial.value:.4f}{size}"
    elif attrs.rejected is not None:
        line = f"rejected untrained ({attrs.rejected}): {attrs.reason or ''}"
    elif trial.state == TrialState.PRUNED:
        steps = trial.intermediate_values
        line = (f"stopped by --pruner after epoch {max(steps)}, val acc {steps[max(steps)]:.4f}{size}" if steps
                else f"stopped by --pruner{size}")
    elif attrs.failed is not None:  # refused before training
        line = f"failed: {attrs.failed}"
    else:  # otherwise the objective catches only a divergence
        line = f"failed, training diverged{size}"
    print(f"trial {trial.number}: {line}", file=sys.stderr)


def _requeue(study: optuna.Study, running: int | None) -> str:
    """Queue the interrupted trial (marked FAIL by Optuna) to resume; the message says what happened."""
    failed = [t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)) if t.number == running]
    if not failed:
        return "interrupted between trials; rerun the same command to continue the study"
    retry_trial(study, failed[0])
    return (f"interrupted: trial {failed[0].number} is marked failed and queued again; the worker that takes it "
            f"resumes {TrialAttrs.of(failed[0]).run_dir or 'its run directory'} from its last checkpoint "
            "(rerun the same command to continue the study)")
