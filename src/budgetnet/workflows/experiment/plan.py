"""Planning an experiment at a scale: every run of its grid with its checked recipe and run directory, and what
each run's directory says it still needs (its status)."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ... import __version__
from ...config import Recipe, RecipeError, load_recipe, read_yaml
from ...training.loop import check_recipe
from ...training.provenance import git_commit
from ...training.rundir import RunFiles, RunSummary, recipe_changes
from .schema import Experiment, Setting, get_scale

TO_TRAIN = ("new", "resume", "retrain")  # the run_status values that still need training


@dataclass
class PlannedRun:
    """One run of the grid at one scale: where it lives and the recipe it trains."""

    name: str
    setting: Setting
    seed: int
    recipe: Recipe
    path: Path


def run_status(run: PlannedRun) -> str:
    """What the run's directory holds now, read from the disk: finished (skipped), diverged (skipped: it diverged
    under this budgetnet), retrain (it diverged under other or unrecorded code, which may have been fixed since),
    resume (has a checkpoint or metric rows), or new."""
    files = RunFiles(run.path)
    summary = files.read_summary()
    status = summary.status if summary is not None else None
    if status == "finished":
        return "finished"
    if status == "diverged":
        return "diverged" if made_by(summary) == code_version() else "retrain"
    # metric rows without a checkpoint: a run stopped before its first checkpoint was due, which --resume
    # trains again from the start (a new --out there is refused, so as not to mix rows)
    return "resume" if files.last.is_file() or files.metrics.is_file() else "new"


def _version_label(version: str, commit: str | None) -> str:
    """'0.2.0+<commit>', or the version alone outside a git checkout: how runs and the running code are compared."""
    return f"{version}+{commit}" if commit else version


def code_version() -> str:
    """The budgetnet that runs now, in made_by's terms (train records the same version and commit)."""
    return _version_label(__version__, git_commit())


def made_by(summary: RunSummary | None) -> str | None:
    """The budgetnet that wrote a run's summary, in code_version's terms (None when the summary predates that
    record, or there is none)."""
    if summary is None or summary.budgetnet_version is None:
        return None
    return _version_label(summary.budgetnet_version, summary.budgetnet_commit)


def _dir_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=,+-]+", "_", text)


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

