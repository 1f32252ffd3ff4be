"""An experiment's results from its run directories as they are: computed first (`experiment_results`), then
rendered as results.md (`results_markdown`), results.csv and the experiment's figures (`write_results`)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ... import atomic
from ...training.rundir import RunFiles, RunRecord
from .. import report
from .plan import PlannedRun
from .schema import Experiment, Scale, get_scale


@dataclass
class ExperimentResults:
    """What results.md, results.csv and the figures show, computed from the run directories."""

    settings: int                         # settings of the grid, trained or not
    groups: dict[str, list[RunRecord]]    # setting label -> its runs that have a recipe (settings with none left out)
    rows: list[dict]                      # one per setting in `groups`: its axis values, runs planned, figures
    axis_columns: list[str]               # the rows' axis keys (an axis named like a figure is prefixed "axis_")


def experiment_results(runs: list[PlannedRun]) -> ExperimentResults:
    """Group the runs by setting (seeds of one setting share a row) and summarise each setting's runs."""
    labels = list(dict.fromkeys(r.setting.label for r in runs))
    loaded = {r.name: RunFiles(r.path).read_run() for r in runs if RunFiles(r.path).recipe.is_file()}
    groups = {label: [loaded[r.name] for r in runs if r.setting.label == label and r.name in loaded]
              for label in labels}
    groups = {label: g for label, g in groups.items() if g}
    rows, axis_columns = [], []
    for row in report.setting_rows(groups):
        planned = [r for r in runs if r.setting.label == row["setting"]]
        row["runs"] = len(planned)
        values = {("axis_" + a if a in row else a): v for a, v in planned[0].setting.values.items()}
        axis_columns += [c for c in values if c not in axis_columns]
        rows.append({"setting": row.pop("setting"), **values, **row})
    return ExperimentResults(len(labels), groups, rows, axis_columns)


def results_markdown(exp: Experiment, scaled: Scale, runs: list[PlannedRun], results: ExperimentResults,
                     figures: list[Path], command: str) -> str:
    """results.md: what the scale changes, how to reproduce it, the per-setting table and the figures."""
    scale = scaled.name
    changes = ", ".join([f"{k}={json.dumps(v)}" for k, v in scaled.overrides.items()]
                        + ([f"epochs x {scaled.epoch_scale:g} (schedule lengths alike)"]
                           if scaled.epoch_scale != 1 else [])) or "none"
    note = (f"> **{scale} scale, not the study's setting.** Every run changes the base recipe by: {changes}."
            if scale != "full" else f"> full scale: the base recipe `{exp.base}` as is (changes: {changes}).")
    axes = results.axis_columns if len(results.axis_columns) > 1 else []
    lines = [f"# {exp.name}: {exp.description} — {scale} scale", "", note, "",
             f"Base recipe `{exp.base}`; {len(runs)} runs = {results.settings} settings x "
             f"{len(runs) // results.settings} seeds; reproduce with `{command}`.", "",
             report.markdown_table(results.rows, axes), "",
             f"mean ± std over seeds. {report.TABLE_NOTE} Train time: seconds in training epochs, evaluation "
             "excluded.", "",
             *(f"![{f.stem}]({f.name})" for f in figures), ""]
    return "\n".join(lines)


def write_results(exp: Experiment, scale: str, runs: list[PlannedRun], out: Path, command: str | None = None,
                  results: ExperimentResults | None = None) -> Path:
    """out/results.md, out/results.csv and the experiment's figures, from the run directories as they are (or from
    their `results`, already computed); `command` is what reproduces them (default: this experiment alone)."""
    scaled = get_scale(exp, scale)
    results = results or experiment_results(runs)
    title = f"{exp.name} ({scale.upper()} scale)" if scale != "full" else f"{exp.name} (full scale)"
    figures = report.draw(results.groups, results.rows, exp.plots, out, title) if results.groups else []
    report.write_csv(results.rows, out / "results.csv", {"experiment": exp.name, "scale": scale})
    command = command or f"budgetnet experiment {exp.source} --scale {scale} --out {out}"
    atomic.write_text(out / "results.md", results_markdown(exp, scaled, runs, results, figures, command))
    return out / "results.md"
