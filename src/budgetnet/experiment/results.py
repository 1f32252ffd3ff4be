"""An experiment's results from its run directories as they are: results.md (the Markdown table), results.csv
and the experiment's figures."""
from __future__ import annotations

import json
from pathlib import Path

from .. import report
from ..rundir import RunFiles
from .plan import PlannedRun
from .schema import Experiment, get_scale


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

