"""Experiments: a YAML grid of recipe variations, trained (finished runs skipped, killed ones resumed, K at a
time) into normal run directories, then summarised as results.md, results.csv and figures.

An experiment file (shipped ones live in budgetnet/experiments/):

    description: SGD vs SGDR vs Adam vs RAdam
    base: seed                       # recipe name or file
    axes:                            # grid = product of the axes x seeds
      batch_size: [64, 128]          # a recipe key (dotted) and its values, or
      optimizer:                     # named settings: label -> dotted overrides
        sgdr: {optimizer.name: sgd, schedule.name: warm_restarts}
        adam: {optimizer.name: adam, optimizer.lr: 1.0e-3}
    seeds: [0, 1, 2]
    scales:                          # --scale NAME: overrides applied to every run (and optionally seeds)
      smoke: {epoch_scale: 0.0025, data.train_size: 5000, seeds: [0]}
      full: {}
    plots: [test_curves, final_acc]  # report.PLOTS

`epoch_scale: F` multiplies every run's epochs (at least 1) and the schedule's lengths in epochs (warm-restart
T_0, warm-up) by the same ratio, so a shorter run keeps the schedule's shape: its restarts and its annealing.
"""
from __future__ import annotations

import contextlib
import copy
import itertools
import json
import os
import re
import subprocess
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from queue import Queue
from typing import Any

import torch
import yaml

from . import __version__, report
from .config import Recipe, RecipeError, _suggest, load_recipe, read_yaml
from .data import SPLIT_SIZES, from_arrays, load_split, steps_per_epoch
from .rundir import RunFiles, recipe_changes
from .runtime import git_commit, resolve_device, sigterm_interrupts
from .train import check_recipe, train_without_rundir

KEYS = ("description", "base", "axes", "seeds", "scales", "plots")
TO_TRAIN = ("new", "resume", "retrain")  # the PlannedRun statuses that still need training


@dataclass
class Setting:
    """One point of the grid (seeds aside): its label, its value on each axis, and its recipe overrides."""

    label: str
    values: dict[str, str]
    overrides: dict[str, Any]


@dataclass
class Experiment:
    """An experiment file, checked."""

    name: str
    source: str                      # what was asked for: a shipped name or a file path
    base: str
    description: str = ""
    axes: dict[str, list[tuple[str, dict[str, Any]]]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])
    scales: dict[str, dict[str, Any]] = field(default_factory=lambda: {"full": {}})
    plots: list[str] = field(default_factory=lambda: ["curves"])

    def settings(self) -> list[Setting]:
        """The product of the axes, in file order."""
        combos = itertools.product(*(self.axes[a] for a in self.axes))
        settings = []
        for combo in combos:
            values = {axis: label for axis, (label, _) in zip(self.axes, combo)}
            overrides = {k: v for _, o in combo for k, v in o.items()}
            label = ",".join(f"{a}={v}" for a, v in values.items()) or f"{Path(self.base).stem} recipe"
            settings.append(Setting(label, values, overrides))
        return settings


@dataclass
class PlannedRun:
    """One run of the grid at one scale: where it lives and the recipe it trains."""

    name: str
    setting: Setting
    seed: int
    recipe: Recipe
    path: Path

    @property
    def status(self) -> str:
        """finished (skipped), diverged (skipped: it diverged under this budgetnet), retrain (it diverged under
        other or unrecorded code, which may have been fixed since), resume (has a checkpoint or metric rows), or
        new."""
        files = RunFiles(self.path)
        summary = files.read_summary()
        if summary.get("status") == "finished":
            return "finished"
        if summary.get("status") == "diverged":
            return "diverged" if made_by(summary) == code_version() else "retrain"
        # metric rows without a checkpoint: a run stopped before its first checkpoint was due, which --resume
        # trains again from the start (a new --out there is refused, so as not to mix rows)
        return "resume" if files.last.is_file() or files.metrics.is_file() else "new"


def code_version() -> str:
    """The budgetnet that runs now, in made_by's terms (train records the same version and commit)."""
    return made_by({"budgetnet_version": __version__, "budgetnet_commit": git_commit()})


def made_by(summary: dict) -> str | None:
    """The budgetnet that wrote a run's summary (None when the summary predates that record)."""
    version = summary.get("budgetnet_version")
    if version is None:
        return None
    commit = summary.get("budgetnet_commit")
    return f"{version}+{commit}" if commit else version


def load_experiment(name_or_path: str | Path) -> Experiment:
    """Read and check a shipped experiment (by name) or an experiment YAML file."""
    raw, path = read_yaml(name_or_path, kind="experiments")
    where = f"experiment {path}"
    for key in raw:
        if key not in KEYS:
            raise RecipeError(f"{where}: unknown key {key!r}{_suggest(key, list(KEYS))}; valid keys: {', '.join(KEYS)}")
    if "base" not in raw:
        raise RecipeError(f"{where}: 'base' is missing: name the recipe every run starts from, e.g. base: seed")
    base = str(raw["base"])
    if path is not None and (path.parent / base).is_file():
        base = str(path.parent / base)  # a recipe file next to the experiment file
    axes = {}
    for axis, values in (raw.get("axes") or {}).items():
        if isinstance(values, list) and values:
            axes[axis] = [(_value_label(v), {axis: v}) for v in values]
        elif isinstance(values, dict) and values and all(isinstance(o, dict) for o in values.values()):
            axes[axis] = [(str(label), dict(o)) for label, o in values.items()]
        else:
            raise RecipeError(f"{where}: axis {axis!r} must be a non-empty list of values of that recipe key, or a "
                              f"mapping of labels to overrides ({{label: {{dotted.key: value}}}}), got {values!r}")
    seeds = raw.get("seeds", [0])
    if not (isinstance(seeds, list) and seeds and all(isinstance(s, int) for s in seeds)):
        raise RecipeError(f"{where}: seeds must be a non-empty list of integers, got {seeds!r}")
    scales = raw.get("scales") or {"full": {}}
    if not (isinstance(scales, dict) and all(isinstance(s, dict) for s in scales.values())):
        raise RecipeError(f"{where}: scales must map scale names to overrides, e.g. smoke: {{epochs: 3}}")
    plots = raw.get("plots", ["curves"])
    if not isinstance(plots, list):
        raise RecipeError(f"{where}: plots must be a list, e.g. [curves, lr]; valid plots: {', '.join(report.PLOTS)}")
    for plot in plots:
        if plot not in report.PLOTS:
            raise RecipeError(f"{where}: unknown plot {plot!r}{_suggest(str(plot), list(report.PLOTS))}; "
                              f"valid plots: {', '.join(report.PLOTS)}")
    name = Path(str(name_or_path)).stem
    return Experiment(name, str(name_or_path), base, str(raw.get("description", "")), axes, seeds, scales,
                      list(plots))


def _value_label(value: Any) -> str:
    return "-".join(map(str, value)) if isinstance(value, list) else str(value)


def _dir_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=,+-]+", "_", text)


@dataclass
class Scale:
    """A scale of an experiment: recipe overrides for every run, its seeds, and the fraction of epochs it trains."""

    name: str
    overrides: dict[str, Any]
    seeds: list[int]
    epoch_scale: float = 1.0


def get_scale(exp: Experiment, scale: str) -> Scale:
    """The checked scale `scale` of `exp`."""
    if scale not in exp.scales:
        raise RecipeError(f"experiment {exp.name} has no scale {scale!r}{_suggest(scale, list(exp.scales))}; "
                          f"its scales: {', '.join(exp.scales)}")
    overrides = dict(exp.scales[scale])
    seeds = overrides.pop("seeds", exp.seeds)
    if not (isinstance(seeds, list) and seeds and all(isinstance(s, int) for s in seeds)):
        raise RecipeError(f"experiment {exp.name}, scale {scale}: seeds must be a non-empty list of integers, "
                          f"got {seeds!r}")
    epoch_scale = overrides.pop("epoch_scale", 1.0)
    if not (isinstance(epoch_scale, (int, float)) and 0 < epoch_scale <= 1):
        raise RecipeError(f"experiment {exp.name}, scale {scale}: epoch_scale must be a fraction in (0, 1] of "
                          f"each run's epochs, got {epoch_scale!r}")
    return Scale(scale, overrides, seeds, float(epoch_scale))


def scale_epochs(recipe: Recipe, fraction: float) -> None:
    """Train `fraction` of the recipe's epochs (at least 1), with the schedule's lengths in epochs (warm-restart
    T_0, warm-up) shrunk by the same ratio: the same restarts and annealing over fewer epochs."""
    epochs = max(1, round(recipe.epochs * fraction))
    ratio = epochs / recipe.epochs
    recipe.epochs = epochs
    recipe.schedule.T_0 *= ratio
    recipe.schedule.warmup_epochs *= ratio


def plan(exp: Experiment, scale: str, out: str | Path, overrides: list[str] = ()) -> list[PlannedRun]:
    """Every run of the grid (settings x seeds) with its checked recipe and directory out/runs/<setting>-seed<N>.

    A run's recipe is the base, then the scale's overrides, then `overrides` (key=value), then the setting's,
    then its seed; then the scale's epoch_scale. Raises RecipeError before any training for a recipe that cannot
    run, and for a run directory that already holds a different recipe (another scale or an edited experiment).
    """
    base, _ = read_yaml(exp.base)
    scaled = get_scale(exp, scale)
    runs = []
    for setting in exp.settings():
        for seed in scaled.seeds:
            name = _dir_name(f"{setting.label}-seed{seed}" if setting.values else f"seed{seed}")
            sets = [f"{k}={json.dumps(v)}" for k, v in scaled.overrides.items()] + list(overrides) + \
                   [f"{k}={json.dumps(v)}" for k, v in setting.overrides.items()] + \
                   [f"seed={seed}", f"description={json.dumps(f'{exp.name} ({scale}): {setting.label}, seed {seed}')}"]
            try:
                recipe = load_recipe(base, sets)
                scale_epochs(recipe, scaled.epoch_scale)
                check_recipe(recipe)
            except (ValueError, RuntimeError) as e:
                raise RecipeError(f"experiment {exp.name}, scale {scale}, run {name}: {e}") from None
            if any(r.name == name for r in runs):
                raise RecipeError(f"experiment {exp.name}: two settings share the run name {name!r}; "
                                  "give the values distinct labels (a named-settings axis)")
            run = PlannedRun(name, setting, seed, recipe, Path(out) / "runs" / name)
            check_same_recipe(run)
            runs.append(run)
    return runs


def check_same_recipe(run: PlannedRun) -> None:
    """Raise RecipeError when the run's directory holds a run of another recipe (its description aside)."""
    files = RunFiles(run.path)
    if not files.recipe.is_file():
        return
    changes = recipe_changes(files.read_recipe(), run.recipe)
    diffs = [f"{k}: {a!r} there, {b!r} now" for k, (a, b) in changes.items()
             if k != "description"]  # a label, not training
    if diffs:
        raise RecipeError(f"{run.path} was trained with a different recipe ({'; '.join(diffs[:4])}): "
                          "use another --out for a new scale or edited experiment, or delete that run")


# ---- cost ---------------------------------------------------------------------------------------

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
    n_train = recipe.data.train_size or SPLIT_SIZES["train"] - recipe.data.val_size
    n_eval = (recipe.data.test_size or SPLIT_SIZES["test"]) + recipe.data.val_size
    n_probe_eval = min(recipe.eval_batch_size, n_eval)
    gen = torch.Generator().manual_seed(0)
    classes = recipe.model.num_classes

    def random_split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (n, recipe.model.in_channels, recipe.model.image_size, recipe.model.image_size)
        return (torch.randint(0, 256, shape, dtype=torch.uint8, generator=gen),
                torch.randint(0, classes, (n,), generator=gen))

    data = from_arrays(random_split(steps * recipe.batch_size), None, random_split(n_probe_eval),
                       [str(c) for c in range(classes)], recipe.data.dataset, device)
    ends: list[tuple[float, dict]] = []  # (when, row) at the end of each epoch, its evaluation included

    def on_epoch(row: dict) -> None:
        ends.append((time.perf_counter(), row))
        if len(ends) == 2:
            raise _Measured

    with contextlib.suppress(_Measured):
        train_without_rundir(probe, data=data, on_epoch=on_epoch)
    (warm_end, _), (timed_end, row) = ends
    step_seconds = row["seconds"] / steps
    eval_seconds = timed_end - warm_end - row["seconds"]
    return (steps_per_epoch(n_train, recipe.batch_size) * step_seconds
            + n_eval / n_probe_eval * eval_seconds / recipe.eval_every)


def cost_plan(runs: list[PlannedRun], jobs: int = 1, steps: int = 3) -> str:
    """A table of what training the runs that are not done costs on this device: per run the epochs left and
    the seconds per epoch measured with a few steps (once per distinct cost), and the total."""
    measured: dict[str, float] = {}
    lines = [f"{'run':<48} {'status':<9} {'epochs':>6} {'s/epoch':>9} {'seconds':>9}"]
    total = 0.0
    for run in runs:
        left = 0 if run.status not in TO_TRAIN else run.recipe.epochs - (_epochs_done(run) if run.status == "resume" else 0)
        seconds = None
        if left:
            key = _cost_key(run.recipe)
            if key not in measured:
                measured[key] = measure_epoch_seconds(run.recipe, steps)
            seconds = measured[key] * left
            total += seconds
        per_epoch = f"{measured[_cost_key(run.recipe)]:.1f}" if left else "-"
        lines.append(f"{run.path.name[:48]:<48} {run.status:<9} {left:>6} {per_epoch:>9} "
                     f"{'-' if seconds is None else f'{seconds:.0f}':>9}")
    device = resolve_device(runs[0].recipe.device) if runs else "cpu"
    name = torch.cuda.get_device_name(device) if torch.cuda.is_available() and str(device).startswith("cuda") \
        else f"{os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads"
    lines.append(f"total {total:.0f} s = {_hours(total)} of training on {device} ({name}), "
                 f"about {_hours(total / jobs)} with {jobs} at a time; seconds per epoch measured with {steps} "
                 "steps of the training loop on random images after as many to warm up (data loading, compilation "
                 "and checkpoints not included)")
    return "\n".join(lines)


def _epochs_done(run: PlannedRun) -> int:
    return RunFiles(run.path).read_summary().get("epochs_done", 0)


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


# ---- running ------------------------------------------------------------------------------------

class _Children:
    """The child train processes in flight, so that a stopped experiment stops them and waits for them: none is
    left an orphan writing its run. Each child has its own session, so a signal reaches it once, from here."""

    def __init__(self) -> None:
        self.lock, self.running, self.stopping = threading.Lock(), set(), False

    def run(self, cmd: list[str], **kwargs: Any) -> int | None:
        """Run `cmd` to its end and return its exit status (None, and nothing started, once stopping)."""
        with self.lock:
            if self.stopping:
                return None
            child = subprocess.Popen(cmd, start_new_session=True, **kwargs)
            self.running.add(child)
        try:
            return child.wait()
        finally:
            with self.lock:
                self.running.discard(child)

    def stop(self, signum: int) -> None:
        """Send `signum` to every child (each keeps its last checkpoint and exits) and wait for them all."""
        with self.lock:
            self.stopping, children = True, list(self.running)
        for child in children:
            child.send_signal(signum)
        for child in children:
            child.wait()


def _launch(run: PlannedRun, data_dir: str | Path | None, env: dict[str, str], children: _Children) -> int | None:
    """Train (or continue) one run in a child process, its output appended to <run>/train.log."""
    files = RunFiles(run.path)
    files.root.mkdir(parents=True, exist_ok=True)
    if not files.recipe.is_file():
        files.write_recipe(run.recipe)
    cmd = [sys.executable, "-m", "budgetnet", "train", "--resume", str(run.path)]
    if data_dir:
        cmd += ["--data", str(data_dir)]
    with files.train_log.open("a") as log:
        log.write(f"$ {' '.join(cmd)}\n")
        log.flush()
        return children.run(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env})


def _worker_envs(jobs: int) -> list[dict[str, str]]:
    """The environment of each of `jobs` worker slots: a GPU each (round robin) on CUDA, and an equal share of
    the CPU cores as torch threads unless OMP_NUM_THREADS is set."""
    envs = [{} for _ in range(jobs)]
    if "OMP_NUM_THREADS" not in os.environ:
        for env in envs:
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    if torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        gpus = visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]
        for i, env in enumerate(envs):
            env["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
    return envs


def _set_aside(run: PlannedRun) -> Path:
    """Move a run directory to <experiment>/diverged/<name>.<n>, out of the results, and return where."""
    folder = run.path.parent.parent / "diverged"
    folder.mkdir(parents=True, exist_ok=True)
    n = 1
    while (folder / f"{run.name}.{n}").exists():
        n += 1
    return run.path.rename(folder / f"{run.name}.{n}")


def train_runs(runs: list[PlannedRun], jobs: int, data_dir: str | Path | None = None) -> list[PlannedRun]:
    """Train the runs that are not done, `jobs` child processes at a time; returns the runs that failed.

    A run that diverged under other code than this (or under code that did not record itself) is set aside and
    trained again: the divergence may have been a bug fixed since. One that diverged under this code is a result."""
    todo = []
    for run in runs:
        if run.status == "retrain":
            old = _set_aside(run)
            print(f"retrain {run.name}: it diverged under budgetnet {made_by(report.load_run(old).summary) or '(unrecorded)'}, "
                  f"this is {code_version()}; the diverged run is kept in {old}", file=sys.stderr)
        if run.status in ("new", "resume"):
            todo.append(run)
        else:
            print(f"skip {run.name}: {run.status}", file=sys.stderr)
    slots: Queue = Queue()
    for env in _worker_envs(jobs):
        slots.put(env)
    failed, children = [], _Children()

    def work(i: int, run: PlannedRun) -> None:
        env = slots.get()
        try:
            start = time.perf_counter()
            print(f"[{i}/{len(todo)}] {'resume' if run.status == 'resume' else 'train'} {run.name} "
                  f"(log: {RunFiles(run.path).train_log})", file=sys.stderr)
            code = _launch(run, data_dir, env, children)
            if children.stopping:  # stopped with the experiment: neither a result nor a failure
                return
            summary = report.load_run(run.path).summary
            if code and summary.get("status") != "diverged":  # a diverged run is a result, not a failure
                failed.append(run)
                print(f"[{i}/{len(todo)}] {run.name} FAILED (exit {code}): see {RunFiles(run.path).train_log}",
                      file=sys.stderr)
            else:
                print(f"[{i}/{len(todo)}] {run.name} {summary.get('status')}: final test accuracy "
                      f"{summary.get('final_test_acc')} ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
        finally:
            slots.put(env)

    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        with sigterm_interrupts():
            for future in [pool.submit(work, i, r) for i, r in enumerate(todo, 1)]:
                future.result()
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: the runs in flight stop too and keep their last checkpoints
        children.stop(getattr(e, "signum", signal.SIGINT))
        raise
    finally:  # start nothing new
        pool.shutdown(cancel_futures=True)
    return failed


# ---- results ------------------------------------------------------------------------------------

def write_results(exp: Experiment, scale: str, runs: list[PlannedRun], out: Path, command: str | None = None) -> Path:
    """out/results.md, out/results.csv and the experiment's figures, from the run directories as they are;
    `command` is what reproduces them (default: this experiment alone)."""
    labels = list(dict.fromkeys(r.setting.label for r in runs))
    loaded = {r.name: report.load_run(r.path) for r in runs if RunFiles(r.path).recipe.is_file()}
    groups = {label: [loaded[r.name] for r in runs if r.setting.label == label and r.name in loaded]
              for label in labels}
    groups = {label: g for label, g in groups.items() if g}
    rows, axis_columns = [], []
    for row in report.summarize(groups):
        planned = [r for r in runs if r.setting.label == row["setting"]]
        row["runs"] = len(planned)
        values = {("axis_" + a if a in row else a): v for a, v in planned[0].setting.values.items()}
        axis_columns += [c for c in values if c not in axis_columns]
        rows.append({"setting": row.pop("setting"), **values, **row})
    scaled = get_scale(exp, scale)
    is_full = scale == "full"
    title = f"{exp.name} ({scale.upper()} scale)" if not is_full else f"{exp.name} (full scale)"
    figures = report.draw(groups, rows, exp.plots, out, title) if groups else []
    report.write_csv(rows, out / "results.csv", {"experiment": exp.name, "scale": scale})
    changes = ", ".join([f"{k}={json.dumps(v)}" for k, v in scaled.overrides.items()]
                        + ([f"epochs x {scaled.epoch_scale:g} (schedule lengths alike)"]
                           if scaled.epoch_scale != 1 else [])) or "none"
    note = (f"> **{scale} scale, not the study's setting.** Every run changes the base recipe by: {changes}."
            if not is_full else f"> full scale: the base recipe `{exp.base}` as is (changes: {changes}).")
    lines = [f"# {exp.name}: {exp.description} — {scale} scale", "", note, "",
             f"Base recipe `{exp.base}`; {len(runs)} runs = {len(labels)} settings x {len(runs) // len(labels)} "
             f"seeds; reproduce with `{command or f'budgetnet experiment {exp.source} --scale {scale} --out {out}'}`.",
             "",
             report.markdown_table(rows, axis_columns if len(axis_columns) > 1 else []), "",
             f"mean ± std over seeds. {report.TABLE_NOTE} Train time: seconds in training epochs, evaluation "
             "excluded.", "",
             *(f"![{f.stem}]({f.name})" for f in figures), ""]
    (out / "results.md").write_text("\n".join(lines))
    return out / "results.md"


def check_jobs(jobs: int | None) -> int:
    """The number of runs to train at once: `jobs`, by default one per CUDA device, else 1."""
    jobs = jobs or (torch.cuda.device_count() if torch.cuda.is_available() else 1)
    if jobs < 1:
        raise RecipeError(f"--jobs {jobs}: use 1 or more processes")
    return jobs


def check_data(runs: list[PlannedRun], data_dir: str | Path | None) -> None:
    """Fail once, before any training, when runs still to train have no data set to read."""
    if any(r.status in TO_TRAIN for r in runs):
        load_split(runs[0].recipe.data.dataset, "test", data_dir)


def run_experiment(name_or_path: str | Path, scale: str = "full", out: str | Path | None = None,
                   jobs: int | None = None, data_dir: str | Path | None = None, overrides: list[str] = (),
                   dry_run: bool = False) -> tuple[Path, list[PlannedRun]]:
    """Plan, train what is not done, and write the results of an experiment at a scale.

    Returns (out directory, failed runs). out defaults to runs/<experiment>-<scale>; jobs defaults to one
    process per CUDA device, else 1. With dry_run only the plan and its cost on this device are printed.
    """
    exp = load_experiment(name_or_path)
    out = Path(out) if out else Path("runs") / f"{exp.name}-{scale}"
    runs = plan(exp, scale, out, overrides)
    jobs = check_jobs(jobs)
    print(f"experiment {exp.name}, scale {scale}: {len(runs)} runs of up to {max(r.recipe.epochs for r in runs)} "
          f"epochs into {out} ({jobs} at a time)", file=sys.stderr)
    if dry_run:
        print(cost_plan(runs, jobs), file=sys.stderr)
        return out, []
    check_data(runs, data_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "experiment.yaml").write_text(yaml.safe_dump(
        {"name": exp.name, "scale": scale, "base": exp.base, "description": exp.description,
         "scale_overrides": exp.scales[scale], "overrides": list(overrides),
         "runs": {r.name: {"seed": r.seed, **r.setting.overrides} for r in runs}}, sort_keys=False))
    failed = train_runs(runs, jobs, data_dir)
    write_results(exp, scale, runs, out)
    return out, failed
