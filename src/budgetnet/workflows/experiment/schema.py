"""The experiment file: its schema, read and checked into an `Experiment`, and each of its scales.

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

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...config import RecipeError, read_yaml
from ...errors import did_you_mean
from .. import report

KEYS = ("description", "base", "axes", "seeds", "scales", "plots")


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



def load_experiment(name_or_path: str | Path) -> Experiment:
    """Read and check a shipped experiment (by name) or an experiment YAML file."""
    raw, path = read_yaml(name_or_path, kind="experiments")
    where = f"experiment {path}"
    for key in raw:
        if key not in KEYS:
            raise RecipeError(f"{where}: unknown key {key!r}{did_you_mean(key, list(KEYS))}; "
                              f"valid keys: {', '.join(KEYS)}")
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
            raise RecipeError(f"{where}: unknown plot {plot!r}{did_you_mean(str(plot), list(report.PLOTS))}; "
                              f"valid plots: {', '.join(report.PLOTS)}")
    name = Path(str(name_or_path)).stem
    return Experiment(name, str(name_or_path), base, str(raw.get("description", "")), axes, seeds, scales,
                      list(plots))


def _value_label(value: Any) -> str:
    return "-".join(map(str, value)) if isinstance(value, list) else str(value)



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
        raise RecipeError(f"experiment {exp.name} has no scale {scale!r}{did_you_mean(scale, list(exp.scales))}; "
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
