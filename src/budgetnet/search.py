"""Design search under the parameter budget with Optuna, from one process to many workers on many machines.

A space file names a `base` recipe and, in `params`, maps dotted recipe keys to an int or float range
`{low, high, step?, log?}`, to `{choices: [...]}` or to a fixed value. Every trial is a normal run directory
OUT/trials/<number>; the study stores that path relative to OUT, and the trial's full recipe. The objective is
the best validation accuracy (data.val_size images held out of the training set): the test split never chooses
anything. A design over the budget is never trained: an int range of C_1 is sampled after the rest of the design,
within the widest C_1 that fits, so the sampler only ever sees values that were trained; below the range's low end
the fitted C_1 is trained and reported as the trial's value (repair "fit-channels") or the trial is pruned with
user attr `rejected: over_budget` (repair "reject").

Studies live in an RDB storage: a SQLite file by default, $BUDGETNET_STORAGE, or any SQLAlchemy URL (PostgreSQL)
shared by workers that all run the same command. A worker stopped by SIGINT or SIGTERM marks its trial FAIL at once;
a worker killed outright stops sending heartbeats and the next worker to start a trial marks it FAIL. Either way
the trial is queued again and the worker that takes it resumes its run directory from the last checkpoint.
"""
from __future__ import annotations

import contextlib
import copy
import fcntl
import itertools
import json
import math
import os
import random
import signal
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any, Iterator, NoReturn

import torch
import yaml
from matplotlib.ticker import EngFormatter

from .errors import UsageError

try:
    import optuna
    from optuna.distributions import (BaseDistribution, CategoricalDistribution, FloatDistribution,  # noqa: E402
                                      IntDistribution)
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.study import MaxTrialsCallback
    from optuna.trial import FrozenTrial, TrialState
    import sqlalchemy
except ImportError as e:  # the search is an optional extra
    raise UsageError(f"the search needs Optuna ({e}): pip install 'budgetnet[search]'") from None

from . import plots  # noqa: E402
from .config import DataConfig, Recipe, RecipeError, apply_overrides, load_recipe, parse_count, read_yaml  # noqa: E402
from .data import Data, load_data  # noqa: E402
from .rundir import RunFiles  # noqa: E402
from .runtime import Interrupted, resolve_device, sigterm_interrupts  # noqa: E402
from .spec import BudgetError, SpecError, fit_channels  # noqa: E402
from .train import TrainingDiverged, train  # noqa: E402

SAMPLERS = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}
PRUNERS = {"hyperband": optuna.pruners.HyperbandPruner, "halving": optuna.pruners.SuccessiveHalvingPruner,
           "median": optuna.pruners.MedianPruner, "none": optuna.pruners.NopPruner}
REPAIRS = ("fit-channels", "reject")
STORAGE_ENV = "BUDGETNET_STORAGE"  # the storage URL, so that a password never shows on a command line
MAX_RETRIES = 3  # times an interrupted or silent trial is queued again (each retry resumes its checkpoint)
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)  # what --total-trials counts
SPACE_KEYS = ("description", "base", "params")
RANGE_KEYS = ("low", "high", "step", "log")


class SearchError(UsageError):
    """A study, storage or device that cannot be used: the message says what to pass instead."""


class SearchInterrupted(Interrupted):
    """SIGINT or SIGTERM stopped the worker: its trial is marked failed and queued to resume."""


@contextlib.contextmanager
def _optuna_quiet() -> Iterator[None]:
    """Within the block, Optuna's experimental-feature warnings (heartbeats, the constant liar, the stale-trial
    retry) are not shown and Optuna logs errors only: budgetnet says what each trial became in its own lines.
    Both are restored when the block ends."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)


# ---- the space ------------------------------------------------------------------------------------

@dataclass
class Space:
    """A search space: the base recipe as a mapping (fixed values applied) and one distribution per sampled key."""

    name: str
    base: dict
    params: dict[str, BaseDistribution]
    description: str = ""

    def recipe(self, values: dict[str, Any]) -> Recipe:
        """The recipe of one point: the base with `values` (dotted key -> value) applied."""
        raw = copy.deepcopy(self.base)
        apply_overrides(raw, [f"{key}={json.dumps(value)}" for key, value in values.items()])
        return load_recipe(raw)

    def suggest(self, trial: optuna.Trial, skip: tuple[str, ...] = ()) -> dict[str, Any]:
        """Sample every key but `skip` with the trial (non-scalar choices travel as JSON strings, decoded here)."""
        values = {}
        for key, dist in self.params.items():
            if key in skip:
                continue
            if isinstance(dist, IntDistribution):
                values[key] = trial.suggest_int(key, dist.low, dist.high, step=dist.step, log=dist.log)
            elif isinstance(dist, FloatDistribution):
                values[key] = trial.suggest_float(key, dist.low, dist.high, step=dist.step, log=dist.log)
            else:
                values[key] = _decode(trial.suggest_categorical(key, dist.choices))
        return values


def load_space(name_or_path: str | Path) -> Space:
    """Read and check a space file (a path or the name of a shipped space): every key must be a recipe key."""
    raw, path = read_yaml(name_or_path, kind="spaces")
    for key in raw:
        if key not in SPACE_KEYS:
            raise RecipeError(f"{path}: unknown space key {key!r}; a space file holds {', '.join(SPACE_KEYS)}")
    if "base" not in raw:
        raise RecipeError(f"{path}: no 'base': name the recipe the search starts from, e.g. base: demo")
    base = raw["base"]
    if isinstance(base, str):
        local = path.parent / base
        base = read_yaml(local if local.is_file() else base)[0]
    elif not isinstance(base, dict):
        raise RecipeError(f"{path}: base must be a recipe name, a recipe file or a mapping, not {base!r}")
    params = raw.get("params") or {}
    if not isinstance(params, dict):
        raise RecipeError(f"{path}: params must map dotted recipe keys to ranges, choices or values")
    dists, fixed = {}, []
    for key, spec in params.items():
        dist = _distribution(key, spec, path)
        if dist is None:
            fixed.append(f"{key}={json.dumps(spec)}")
        else:
            dists[key] = dist
    space = Space(Path(path).stem, apply_overrides(copy.deepcopy(base), fixed), dists, raw.get("description", ""))
    _check_keys(space, path)
    dist = space.params.get("data.val_size")
    smallest = (dist.low if isinstance(dist, IntDistribution) else min(dist.choices) if dist is not None
                else (space.base.get("data") or {}).get("val_size", DataConfig.val_size))
    if not smallest or smallest <= 0:
        raise RecipeError(f"{path}: the search chooses designs on a validation split, never on the test set: "
                          "set data.val_size (e.g. 5000) in params or in the base recipe")
    return space


def _distribution(key: str, spec: Any, path: Path) -> BaseDistribution | None:
    """The Optuna distribution of one `params` entry, or None for a fixed value."""
    if not isinstance(spec, dict) or not ({"low", "high", "choices"} & spec.keys()):
        return None
    where = f"{path}: params.{key}"
    if "choices" in spec:
        if set(spec) != {"choices"} or not isinstance(spec["choices"], list) or not spec["choices"]:
            raise RecipeError(f"{where}: write choices as {{choices: [a, b, ...]}} with at least one value")
        return CategoricalDistribution([_encode(c) for c in spec["choices"]])
    unknown = set(spec) - set(RANGE_KEYS)
    if unknown or not {"low", "high"} <= spec.keys():
        raise RecipeError(f"{where}: a range is {{low, high, step?, log?}}; got keys {sorted(spec)}")
    low, high, step, log = spec["low"], spec["high"], spec.get("step"), bool(spec.get("log", False))
    numbers = [v for v in (low, high, step) if v is not None]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers):
        raise RecipeError(f"{where}: low, high and step must be numbers, got {spec}")
    try:
        if all(isinstance(v, int) for v in numbers):
            return IntDistribution(low, high, log=log, step=step or 1)
        return FloatDistribution(float(low), float(high), log=log, step=step)
    except ValueError as e:
        raise RecipeError(f"{where}: {e}") from None


def _check_keys(space: Space, path: Path) -> None:
    """Apply every bound and choice to the base once, so a misspelt key or a wrong type fails before any trial."""
    for key, dist in space.params.items():
        values = ([dist.low, dist.high] if isinstance(dist, (IntDistribution, FloatDistribution))
                  else [_decode(c) for c in dist.choices])
        for value in values:
            try:
                space.recipe({key: value})
            except RecipeError as e:
                raise RecipeError(f"{path}: params.{key}={value!r}: {e}") from None
            except SpecError:
                pass  # a design that only fails in combination with other values: rejected per trial


def _encode(choice: Any) -> Any:
    """Optuna's categorical choices are scalars: lists and mappings are stored as compact JSON strings."""
    return json.dumps(choice, separators=(",", ":")) if isinstance(choice, (list, dict)) else choice


def _decode(choice: Any) -> Any:
    return json.loads(choice) if isinstance(choice, str) and choice[:1] in "[{" else choice


# ---- storage and study ----------------------------------------------------------------------------

def storage_url(out: str | Path, storage: str | None = None) -> str:
    """The storage given, else $BUDGETNET_STORAGE, else the SQLite file OUT/search.db."""
    return storage or os.environ.get(STORAGE_ENV) or f"sqlite:///{(Path(out) / 'search.db').resolve()}"


def shown_url(url: str) -> str:
    """The URL with its password hidden, for messages and reports."""
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return url


def open_storage(url: str, heartbeat: int = 60, attempts: int = 5) -> optuna.storages.RDBStorage:
    """An RDB storage whose workers send a heartbeat every `heartbeat` s; silent for 2x that fails and requeues a trial.

    Workers started together on a fresh database race to create Optuna's tables (optuna#1092); the losers
    retry, and by then the tables exist.
    """
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine, heartbeat_interval=heartbeat,
                                              grace_period=2 * heartbeat, heartbeat_stale_trial_callback=_retry_stale)
        except ImportError as e:
            raise SearchError(f"storage {shown_url(url)}: missing database driver ({e}); for PostgreSQL "
                              "pip install 'budgetnet[search]' (psycopg2-binary)") from None
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError, sqlalchemy.exc.OperationalError) as e:
            if attempt + 1 == attempts:
                raise SearchError(f"cannot open storage {shown_url(url)}: {_reason(e)}") from None
            time.sleep(0.5 + random.random())
        except sqlalchemy.exc.SQLAlchemyError as e:  # a malformed URL, an unknown dialect
            raise SearchError(f"cannot open storage {shown_url(url)}: {_reason(e)}") from None


def _reason(error: sqlalchemy.exc.SQLAlchemyError) -> str:
    """The database's own words (the driver's first line), without SQLAlchemy's wrapping and links."""
    cause = getattr(error, "orig", None) or error
    return f"{type(cause).__name__}: {str(cause).strip().splitlines()[0]}"


def _retry(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue a failed trial again with its user attrs (its run directory), at most MAX_RETRIES times."""
    with _optuna_quiet():
        RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)(study, trial)


def _retry_stale(study: optuna.Study, trial: FrozenTrial) -> None:
    print(f"study {study.study_name}: trial {trial.number} stopped sending heartbeats (its worker died): "
          "marked FAIL and queued to resume from its last checkpoint", file=sys.stderr)
    _retry(study, trial)


@_optuna_quiet()
def load_study(storage: str, study_name: str | None = None) -> optuna.Study:
    """An existing study; the name may be left out when the storage holds exactly one."""
    store = open_storage(storage)
    names = optuna.get_all_study_names(store)
    if study_name is None:
        if len(names) != 1:
            raise SearchError(f"{shown_url(storage)} holds {len(names)} studies ({', '.join(names) or 'none'}): "
                              "choose one with --study")
        study_name = names[0]
    if study_name not in names:
        raise SearchError(f"{shown_url(storage)} has no study {study_name!r}; it holds: {', '.join(names) or 'none'}")
    return optuna.load_study(study_name=study_name, storage=store)


# ---- devices ---------------------------------------------------------------------------------------

def _gpu_ids() -> list[str]:
    """The UUIDs of the CUDA devices this process sees (the same physical GPU has the same id in every process)."""
    if not torch.cuda.is_available():
        return []
    return [str(torch.cuda.get_device_properties(i).uuid) for i in range(torch.cuda.device_count())]


def claim_gpu(ids: list[str], lock_dir: str | Path | None = None) -> tuple[int, IO]:
    """The index of the first GPU in `ids` that no other search worker on this machine holds, and its held lock.

    The lock (a file in the temp folder, per user and GPU) is released when the file is closed or the process
    ends, however it ends.
    """
    lock_dir = Path(lock_dir or tempfile.gettempdir())
    for index, gpu in enumerate(ids):
        name = "".join(c if c.isalnum() or c in "-_" else "_" for c in gpu)
        lock = open(lock_dir / f"budgetnet-search-{os.getuid()}-{name}.lock", "a")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return index, lock
        except BlockingIOError:
            lock.close()
    raise SearchError(f"all {len(ids)} GPUs of this machine already have a budgetnet search worker: start one "
                      "worker per GPU, or pass --device cuda:K to run this one beside another")


def worker_device(device: str, lock_dir: str | Path | None = None) -> tuple[str, IO | None]:
    """The device of this worker: 'auto' claims a GPU of its own (claim_gpu) or is the CPU; others are kept."""
    if device != "auto":
        resolve_device(device)  # an unknown or missing device fails here, before any trial
        return device, None
    ids = _gpu_ids()
    if not ids:
        return "cpu", None
    index, lock = claim_gpu(ids, lock_dir)
    return f"cuda:{index}", lock


# ---- running ---------------------------------------------------------------------------------------

@_optuna_quiet()
def run_search(space: Space, out: str | Path, trials: int | None = None, total_trials: int | None = None,
               storage: str | None = None, study_name: str | None = None, budget: int | str | None = None,
               sampler: str = "tpe", pruner: str = "hyperband", repair: str = "fit-channels", seed: int | None = None,
               heartbeat: int = 60, device: str | None = None, data_dir: str | Path | None = None,
               data: Data | None = None, progress: bool = False) -> optuna.Study:
    """Run trials of the study (created on first use) in this process until either target is met; returns the study.

    `trials` caps this process; `total_trials` is the study-wide target shared by all workers (trials finished
    or running, Optuna's MaxTrialsCallback). Workers on other machines run the same call against the same
    storage. `device` overrides the recipes' ('auto': a GPU of its own). `data` replaces loading the data set
    (tests); otherwise every data configuration is loaded once per process. SIGINT and SIGTERM raise
    SearchInterrupted after the running trial is marked failed and queued to resume.
    """
    for flag, value, known in (("--sampler", sampler, SAMPLERS), ("--pruner", pruner, PRUNERS),
                               ("--repair", repair, REPAIRS)):
        if value not in known:
            raise RecipeError(f"{flag} {value}: use one of {', '.join(known)}")
    if trials is None and total_trials is None:
        raise RecipeError("say how many trials: --trials N (this worker) and/or --total-trials N (the whole study)")
    for flag, n in (("--trials", trials), ("--total-trials", total_trials)):
        if n is not None and n < 1:
            raise RecipeError(f"{flag} {n}: give 1 or more")
    budget = parse_count(budget) if budget is not None else None
    check_budget(space, budget, repair)
    out = Path(out)
    storage = storage_url(out, storage)
    out.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(storage=open_storage(storage, heartbeat), study_name=study_name or space.name,
                                direction="maximize", sampler=_sampler(sampler, seed),
                                pruner=PRUNERS[pruner](), load_if_exists=True)
    study.set_user_attr("space", space.name)
    study.set_user_attr("budget", budget or parse_count(space.base.get("budget", Recipe.budget)))
    target = [MaxTrialsCallback(total_trials, states=COUNTED)] if total_trials is not None else []
    target.append(_say_trial)
    if total_trials is not None:
        optuna.storages.fail_stale_trials(study)
        if len(study.get_trials(deepcopy=False, states=COUNTED)) >= total_trials:
            return study
    device, gpu_lock = worker_device(device or space.base.get("device", Recipe.device))
    datasets: dict[tuple, Data] = {}
    running = None  # the number of the trial this process is training

    def objective(trial: optuna.Trial) -> float:
        nonlocal running
        running = trial.number
        check_signal()  # bound below, by the block that runs the trials
        resumed = "run_dir" in trial.user_attrs  # a queued retry inherits its run directory (relative to OUT)
        run_dir = trial.user_attrs.get("run_dir", f"trials/{trial.number}")
        recipe = _trial_recipe(trial, space, budget, repair)
        trial.set_user_attr("run_dir", run_dir)
        trial.set_user_attr("recipe", recipe.to_dict())  # reproducible from the study alone, whatever disk OUT is on
        recipe.device = device
        key = (device, *vars(recipe.data).values())
        if data is None and key not in datasets:
            datasets[key] = load_data(recipe.data, data_dir, resolve_device(device))

        files = RunFiles(out / run_dir)
        resume = resumed and files.recipe.is_file()
        backfill = resume  # a resumed run reports its earlier epochs first, so the pruner sees the whole curve

        def on_epoch(row: dict) -> None:
            nonlocal backfill
            check_signal()
            for r in files.read_metrics() if backfill else [row]:
                if "val_acc" in r:
                    trial.report(r["val_acc"], r["epoch"])
            backfill = False
            if "val_acc" in row and trial.should_prune():
                raise optuna.TrialPruned(f"val acc {row['val_acc']:.4f} after epoch {row['epoch']}")

        if resumed and not resume:
            print(f"trial {trial.number} retries a failed trial whose run directory {run_dir} is not under {out} "
                  "(not started yet, or --out is not shared by every worker): training it from the start",
                  file=sys.stderr)
        summary = train(None if resume else recipe, out / run_dir, data_dir, resume=resume, progress=progress,
                        on_epoch=on_epoch, data=datasets[key] if data is None else data,
                        overrides=[f"device={device}"] if resume else ())  # this worker's device, not the last one's
        trial.set_user_attr("test_acc", summary["final_test_acc"])
        return summary["best_acc"]

    try:
        with sigterm_interrupts() as check_signal:  # a trial's start and end, and each epoch, check for SIGTERM
            study.optimize(objective, n_trials=trials, callbacks=[check_signal, *target],
                           catch=(TrainingDiverged,), gc_after_trial=True)
    except KeyboardInterrupt as e:
        raise SearchInterrupted(_requeue(study, running), getattr(e, "signum", signal.SIGINT)) from None
    finally:
        if gpu_lock is not None:
            gpu_lock.close()
    return study


def smallest_design(space: Space, budget: int | None, repair: str) -> tuple[int, int, str] | None:
    """(parameters, budget, design) of the space's smallest trainable design, or None when none is valid or the
    space has more than 10,000 combinations of model keys (not all tried, so the smallest might be missed).

    Every choice of every sampled model key is tried (an int range: each value, or its ends when it has more
    than 32; a float range: its ends), with C_1 at its smallest: 1 where the repair may fit it (--repair
    fit-channels and an int C_1), else the range's low end or the smallest choice."""
    model = {k: d for k, d in space.params.items() if k.startswith("model.") and k != "model.channels"}
    options = []
    for dist in model.values():
        if isinstance(dist, CategoricalDistribution):
            options.append([_decode(c) for c in dist.choices])
        elif isinstance(dist, IntDistribution) and (dist.high - dist.low) // dist.step < 32:
            options.append(list(range(dist.low, dist.high + 1, dist.step)))
        else:
            options.append([dist.low, dist.high])
    if math.prod(map(len, options)) > 10_000:
        return None
    channels = space.params.get("model.channels")
    smallest = None
    for combo in itertools.product(*options):
        values = dict(zip(model, combo))
        if isinstance(channels, IntDistribution):
            values["model.channels"] = 1 if repair == "fit-channels" else channels.low
        try:
            recipe = space.recipe(values)
            if channels is None and repair == "fit-channels" and isinstance(recipe.model.channels, int):
                recipe.model = replace(recipe.model, channels=1)
            counts = [recipe.model.count_params()] if not isinstance(channels, CategoricalDistribution) else [
                replace(recipe.model, channels=_decode(c)).count_params() for c in channels.choices]
        except SpecError:
            continue  # rejected per trial as an invalid design
        if isinstance(channels, CategoricalDistribution):
            recipe.model = replace(recipe.model, channels=_decode(channels.choices[counts.index(min(counts))]))
        if smallest is None or min(counts) < smallest[0]:
            d = recipe.model.to_dict()
            design = (f"B={d['blocks']} C_1={d['channels']} F={d['kernel_size']} K={d['shortcut_kernel_size']} "
                      f"P={d['pool_size']} {d['block']}")
            smallest = (min(counts), budget if budget is not None else recipe.budget, design)
    return smallest


def check_budget(space: Space, budget: int | None, repair: str) -> None:
    """RecipeError, before the first trial, when not even the space's smallest design fits the budget."""
    if budget is None and "budget" in space.params:
        return  # a sampled budget: each trial checks its own
    smallest = smallest_design(space, budget, repair)
    if smallest is None or smallest[0] <= smallest[1]:
        return
    params, limit, design = smallest
    given = f"--budget {limit:,}" if budget is not None else f"the space's budget of {limit:,}"
    raise RecipeError(f"{given}: no design of --space {space.name} fits; the smallest ({design}) has "
                      f"{params:,} parameters: give --budget {params} or more, or a space of smaller designs")


def _sampler(name: str, seed: int | None) -> optuna.samplers.BaseSampler:
    """TPE lies constantly about running trials, so that parallel workers do not sample the same region."""
    return SAMPLERS[name](seed=seed, constant_liar=True) if name == "tpe" else SAMPLERS[name](seed=seed)


def _say_trial(study: optuna.Study, trial: FrozenTrial) -> None:
    """One stderr line per finished trial, in budgetnet's terms (Optuna's own log shows errors only)."""
    params = trial.user_attrs.get("params")
    size = f", {params:,} params" if params is not None else ""
    if trial.state == TrialState.COMPLETE:
        line = f"val acc {trial.value:.4f}{size}"
    elif "rejected" in trial.user_attrs:
        line = f"rejected untrained ({trial.user_attrs['rejected']}): {trial.user_attrs.get('reason', '')}"
    elif trial.state == TrialState.PRUNED:
        steps = trial.intermediate_values
        line = (f"stopped by --pruner after epoch {max(steps)}, val acc {steps[max(steps)]:.4f}{size}" if steps
                else f"stopped by --pruner{size}")
    else:  # the objective catches only a divergence
        line = f"failed, training diverged{size}"
    print(f"trial {trial.number}: {line}", file=sys.stderr)


def _requeue(study: optuna.Study, running: int | None) -> str:
    """Queue the interrupted trial (marked FAIL by Optuna) to resume; the message says what happened."""
    failed = [t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)) if t.number == running]
    if not failed:
        return "interrupted between trials; rerun the same command to continue the study"
    _retry(study, failed[0])
    return (f"interrupted: trial {failed[0].number} is marked failed and queued again; the worker that takes it "
            f"resumes {failed[0].user_attrs.get('run_dir', 'its run directory')} from its last checkpoint "
            "(rerun the same command to continue the study)")


def _trial_recipe(trial: optuna.Trial, space: Space, budget: int | None, repair: str) -> Recipe:
    """Sample the trial's recipe within the budget, or prune the trial with the reason."""
    channels = space.params.get("model.channels")
    within = isinstance(channels, IntDistribution)  # sampled last, within the widest C_1 that fits
    values = space.suggest(trial, skip=("model.channels",) if within else ())
    try:
        recipe = space.recipe({**values, "model.channels": channels.low} if within else values)
    except SpecError as e:
        _reject(trial, "invalid_design", str(e))
    if budget is not None:
        recipe.budget = budget
    if within:
        recipe.model = replace(recipe.model, channels=_suggest_channels(trial, channels, recipe, repair))
    params = recipe.model.count_params()
    if params > recipe.budget:  # a fixed C_1, or one of the space's choices
        if repair == "reject" or "model.channels" in space.params or not isinstance(recipe.model.channels, int):
            _reject(trial, "over_budget", f"{params:,} parameters > budget {recipe.budget:,}")
        try:
            fitted = fit_channels(recipe.model, recipe.budget)
        except BudgetError as e:
            _reject(trial, "over_budget", str(e))
        trial.set_user_attr("repaired", f"C_1 {recipe.model.channels} -> {fitted}")
        recipe.model = replace(recipe.model, channels=fitted)
        params = recipe.model.count_params()
    design = recipe.model.to_dict()
    trial.set_user_attr("params", params)
    trial.set_user_attr("design", {k: design[k] for k in ("blocks", "channels", "kernel_size",
                                                            "shortcut_kernel_size", "pool_size", "block")})
    return recipe


def _suggest_channels(trial: optuna.Trial, dist: IntDistribution, recipe: Recipe, repair: str) -> int:
    """C_1 from the space's range cut at the widest that fits the budget; below the range, the fitted C_1 itself.

    Either way the value the study records is the value trained, so TPE and the importances reason about
    trained designs (the range differs between trials; Optuna allows that for a numeric parameter).
    """
    try:
        widest = fit_channels(recipe.model, recipe.budget)
    except BudgetError as e:
        _reject(trial, "over_budget", str(e))
    if widest >= dist.low:
        high = min(dist.high, dist.low + (widest - dist.low) // dist.step * dist.step)
        return trial.suggest_int("model.channels", dist.low, high, step=dist.step, log=dist.log)
    narrowest = replace(recipe.model, channels=dist.low).count_params()
    if repair == "reject":
        _reject(trial, "over_budget", f"C_1={dist.low}, the narrowest in the space, needs {narrowest:,} parameters "
                                      f"> budget {recipe.budget:,}")
    trial.set_user_attr("repaired", f"C_1 {dist.low}..{dist.high} -> {widest}")
    return trial.suggest_int("model.channels", widest, widest, log=dist.log)


def _reject(trial: optuna.Trial, reason: str, message: str) -> NoReturn:
    """Prune before training (pruned rather than failed, so that the sampler learns to avoid the region)."""
    trial.set_user_attr("rejected", reason)
    trial.set_user_attr("reason", message)
    raise optuna.TrialPruned(f"{reason}: {message}")


# ---- report ----------------------------------------------------------------------------------------

def trial_counts(trials: list[FrozenTrial]) -> dict[str, int]:
    """Trials by outcome: completed, pruned by the pruner, rejected before training, repaired, failed, running."""
    rejected = [t.user_attrs.get("rejected") for t in trials]
    return {"trials": len(trials),
            "complete": sum(t.state == TrialState.COMPLETE for t in trials),
            "pruned": sum(t.state == TrialState.PRUNED and r is None for t, r in zip(trials, rejected)),
            "rejected_over_budget": rejected.count("over_budget"),
            "rejected_invalid": rejected.count("invalid_design"),
            "repaired": sum("repaired" in t.user_attrs for t in trials),
            "failed": sum(t.state == TrialState.FAIL for t in trials),
            "running": sum(t.state == TrialState.RUNNING for t in trials)}


def worker_summary(study: optuna.Study, out: str | Path, storage: str | None) -> str:
    """What a worker prints when it stops: the study's counts, its best trial and the report command."""
    counts = trial_counts(study.get_trials(deepcopy=False))
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    best = max(done, key=lambda t: t.value) if done else None
    where = f" --storage '{shown_url(storage)}'" if storage else ""  # else $BUDGETNET_STORAGE or OUT/search.db
    return "\n".join([
        f"study {study.study_name}: " + ", ".join(f"{v} {k}" for k, v in counts.items()),
        f"best: trial {best.number}, val acc {best.value:.4f}, {best.user_attrs['params']:,} params, {best.params}"
        if best else "no trial completed yet",
        f"report: budgetnet search-report{where} --study {study.study_name} --out {out}"])


def pareto_front(points: list[tuple[int, float]]) -> list[int]:
    """Indices of the (params, accuracy) points no other point beats on both (fewer params, higher accuracy)."""
    front, best = [], -math.inf
    for i in sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1])):
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


@_optuna_quiet()
def search_report(storage: str, out: str | Path, study_name: str | None = None, top: int = 10) -> dict:
    """Write OUT/search.md, pareto.png and importances.png for a study; return the counts, best trial and front."""
    study = load_study(storage, study_name)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    trials = study.get_trials(deepcopy=False)
    counts = trial_counts(trials)
    done = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: -t.value)
    front = [done[i] for i in pareto_front([(t.user_attrs["params"], t.value) for t in done])]
    budget = study.user_attrs.get("budget")
    _plot_front(study.study_name, trials, done, front, budget, out / "pareto.png")
    importances = _importances(study.study_name, done, out / "importances.png")

    lines = [f"# Search `{study.study_name}`", "",
             f"Storage `{shown_url(storage)}`, space `{study.user_attrs.get('space', '?')}`"
             + (f", budget {budget:,} parameters" if budget else "") + ".",
             "The objective is the best validation accuracy (data.val_size images held out of the training set); "
             "the test set chose nothing, its final accuracy is shown for reference.", "",
             "| " + " | ".join(counts) + " |", "|" + "---:|" * len(counts),
             "| " + " | ".join(str(v) for v in counts.values()) + " |", "",
             *(["Running trials whose worker died stay so until a worker runs again: it marks them failed.", ""]
               if counts["running"] else []),
             f"## Top {min(top, len(done))} designs", "",
             "| rank | trial | params | val acc | test acc | design | sampled | run directory |",
             "|---:|---:|---:|---:|---:|---|---|---|"]
    for rank, t in enumerate(done[:top], 1):
        lines.append(f"| {rank} | {t.number} | {t.user_attrs['params']:,} | {t.value:.4f} | "
                     f"{_fmt(t.user_attrs.get('test_acc'))} | {_design(t)} | {_sampled(t)} | "
                     f"`{t.user_attrs['run_dir']}` |")
    lines += ["", "## Parameters vs accuracy", "",
              "Pareto front (no other design has fewer parameters and higher validation accuracy): trials "
              + ", ".join(f"{t.number} ({t.user_attrs['params']:,}, {t.value:.4f})" for t in front) + ".", "",
              "![parameters vs accuracy](pareto.png)", "",
              "## Parameter importances (PED-ANOVA, Optuna's default evaluator)", ""]
    if importances:
        lines += [f"- `{k}`: {v:.3f}" for k, v in importances.items()] + ["", "![importances](importances.png)"]
    else:
        lines.append("Not enough completed trials with varying parameters yet.")
    if done:
        (out / "best-recipe.yaml").write_text(yaml.safe_dump(done[0].user_attrs["recipe"], sort_keys=False))
        lines += ["", "## Reproduce the best design", "",
                  f"Trial {done[0].number}'s recipe, as the study stores it, is `best-recipe.yaml` beside this file; "
                  f"its run directory is `{done[0].user_attrs['run_dir']}` under the search's --out. From this folder:",
                  "", "`budgetnet train --recipe best-recipe.yaml`"]
    (out / "search.md").write_text("\n".join(lines) + "\n")
    best = done[0] if done else None
    return {"study": study.study_name, "counts": counts, "importances": importances,
            "best": None if best is None else {"trial": best.number, "val_acc": best.value,
                                               "params": best.user_attrs["params"], **best.params},
            "front": [t.number for t in front], "report": str(out / "search.md")}


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _design(t: FrozenTrial) -> str:
    d = t.user_attrs["design"]
    text = (f"B={d['blocks']} C_1={d['channels']} F={d['kernel_size']} K={d['shortcut_kernel_size']} "
            f"P={d['pool_size']} {d['block']}")
    return text + (f" ({t.user_attrs['repaired']})" if "repaired" in t.user_attrs else "")


def _sampled(t: FrozenTrial) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in t.params.items() if not k.startswith("model."))


def _plot_front(name: str, trials: list[FrozenTrial], done: list[FrozenTrial], front: list[FrozenTrial],
                budget: int | None, path: Path) -> None:
    fig, ax = plots.subplots(figsize=(7.5, 5))
    pruned = [t for t in trials if t.state == TrialState.PRUNED and t.intermediate_values]
    if pruned:
        ax.scatter([t.user_attrs["params"] for t in pruned], [t.intermediate_values[max(t.intermediate_values)]
                                                             for t in pruned],
                   marker="x", color="0.6", label="pruned (val acc when stopped)")
    ax.scatter([t.user_attrs["params"] for t in done], [t.value for t in done], color="tab:blue", alpha=0.7,
               label="completed trials")
    if front:
        xs, ys = [t.user_attrs["params"] for t in front], [t.value for t in front]
        ax.step(xs, ys, where="post", color="tab:red", lw=1.5)
        ax.scatter(xs, ys, color="tab:red", s=60, zorder=3, label="Pareto front")
        for t in front:
            ax.annotate(f"#{t.number}", (t.user_attrs["params"], t.value), textcoords="offset points",
                        xytext=(4, 4), fontsize=8)
    if budget:
        ax.axvline(budget, color="k", ls="--", lw=1, label=f"budget {budget:,}")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    ax.xaxis.set_minor_formatter(EngFormatter(sep=""))
    ax.set_xlabel("trainable parameters (log scale)")
    ax.set_ylabel("best validation accuracy")
    ax.set_title(f"study {name}: parameters vs accuracy")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    plots.save(fig, path)


def _importances(name: str, done: list[FrozenTrial], path: Path) -> dict[str, float]:
    """Importances (Optuna's default evaluator) of the sampled keys over the completed trials' trained values.

    A C_1 range cut by the budget differs between trials; Optuna's evaluators treat each distinct range as a
    regime of its own (PED-ANOVA drops regimes of few trials, the intersection search space drops the parameter),
    so they see each varying numeric range widened to its union over the trials instead.
    """
    seen: dict[str, list] = {}
    for t in done:
        for key, dist in t.distributions.items():
            seen.setdefault(key, []).append(dist)
    union = {key: type(ds[0])(min(d.low for d in ds), max(d.high for d in ds), log=ds[0].log)
             for key, ds in seen.items() if isinstance(ds[0], (IntDistribution, FloatDistribution)) and len(set(ds)) > 1}
    widened = optuna.create_study(direction="maximize")
    widened.add_trials([optuna.trial.create_trial(params=t.params, value=t.value, distributions={
        k: union.get(k, d) for k, d in t.distributions.items()}) for t in done])
    try:
        importances = optuna.importance.get_param_importances(widened)
    except (ValueError, RuntimeError):
        return {}
    if not importances:
        return {}
    names = list(importances)[::-1]
    fig, ax = plots.subplots(figsize=(7, 0.45 * len(names) + 1.5))
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    ax.set_xlabel("importance for validation accuracy (PED-ANOVA, sums to 1)")
    ax.set_title(f"study {name}: parameter importances")
    ax.grid(axis="x", alpha=0.3)
    plots.save(fig, path)
    return dict(importances)
