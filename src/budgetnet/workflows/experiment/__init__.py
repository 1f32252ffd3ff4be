"""Experiments: a YAML grid of recipe variations, trained (finished runs skipped, killed ones resumed, K at a
time) into normal run directories, then summarised as results.md, results.csv and figures.

    schema.py    the experiment file: its keys, axes, seeds, scales and plots, checked
    plan.py      every run of the grid at a scale, its recipe and run directory, and its status on disk
    cost.py      what the runs still to train cost on this device, timed on the training loop
    runner.py    training them in child processes, K at a time, passing signals on
    results.py   results.md, results.csv and figures from the run directories
"""
from __future__ import annotations

import sys
from pathlib import Path

import yaml

from ... import atomic

from .cost import cost_plan
from .plan import PlannedRun, plan
from .results import write_results
from .runner import check_data, check_jobs, train_runs
from .schema import load_experiment


def run_experiment(name_or_path: str | Path, scale: str = "full", out: str | Path | None = None,
                   *, jobs: int | None = None, data_dir: str | Path | None = None, overrides: list[str] = (),
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
    atomic.write_text(out / "experiment.yaml", yaml.safe_dump(
        {"name": exp.name, "scale": scale, "base": exp.base, "description": exp.description,
         "scale_overrides": exp.scales[scale], "overrides": list(overrides),
         "runs": {r.name: {"seed": r.seed, **r.setting.overrides} for r in runs}}, sort_keys=False))
    failed = train_runs(runs, jobs, data_dir)
    write_results(exp, scale, runs, out)
    return out, failed
