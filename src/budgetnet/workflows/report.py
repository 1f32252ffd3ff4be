"""Compare run directories: per-setting mean +- std tables (Markdown, CSV) and figures of their curves.

    runs = find_runs(["runs/a", "runs/b"])
    report(runs, "out/")             # out/report.md, curves.png, lr.png, [params_vs_acc.png]

`experiment/results.py` groups the runs of a grid by setting (seeds of one setting share a row and a colour) and calls
the same functions; here every run is its own setting.
"""
from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path
from typing import Callable, Literal

import torch

from .. import atomic, plots
from ..config import Recipe, RecipeError
from ..data.cifar import split_size
from ..design.model import ResNet
from ..training.loop import build_optimization
from ..training.rundir import MetricRow, RunFiles, RunRecord, recipe_yaml


def find_runs(paths: list[str | Path]) -> list[RunRecord]:
    """The runs named: run directories, or experiment directories (every run under their runs/)."""
    runs = []
    for path in map(Path, paths):
        if not path.is_dir():
            raise RecipeError(f"{path}: no such directory")
        if not RunFiles(path).recipe.is_file() and (path / "runs").is_dir():
            runs += [RunFiles(p).read_run() for p in sorted((path / "runs").iterdir()) if RunFiles(p).recipe.is_file()]
        else:
            runs.append(RunFiles(path).read_run())
    if not runs:
        raise RecipeError(f"no run directories in {', '.join(map(str, paths))}")
    return runs


def run_labels(runs: list[RunRecord]) -> list[str]:
    """Short unique names: the folder name, or more of the path where folder names repeat."""
    names = [r.path.name for r in runs]
    if len(set(names)) == len(names):
        return names
    return [str(r.path) for r in runs]


# ---- tables -------------------------------------------------------------------------------------

def mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation of the values given (None skipped); std is None below two values."""
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


# summary key -> (row key, factor, digits): accuracies in percent, losses to 4 digits, seconds whole
SUMMARY_COLUMNS = {"final_test_acc": ("final_test_acc_pct", 100, 2),
                   "best_seen_test_acc": ("best_seen_test_acc_pct", 100, 2),
                   "best_test_acc": ("best_test_acc_pct", 100, 2),
                   "final_test_loss": ("final_test_loss", 1, 4), "train_seconds": ("train_seconds", 1, 0)}
# what the columns of markdown_table mean, for the text below a table
TABLE_NOTE = ("Final: the last epoch's test accuracy. Best seen: the best plain test accuracy (no TTA) seen every "
              "`test_every` epochs and after the last, chosen on the test set, as the study did (its scripts test "
              "every 10 epochs and its text reports the highest); - where a run did not record it (test_every 0, "
              "or a run from before test_every). Best: the test accuracy at the epoch chosen on validation when "
              "there is a validation split, else on test, among the epochs evaluated every `eval_every`.")


def setting_rows(groups: dict[str, list[RunRecord]]) -> list[dict]:
    """One row per setting: mean and std over its finished runs (seeds; over the unfinished ones while none has
    finished) of final, best-seen and best test accuracy (percent), final test loss and training time (whole
    seconds), std only with two runs or more; parameters, epochs and test_every; how many runs finished."""
    rows = []
    for label, runs in groups.items():
        done = [r.summary for r in runs if r.status == "finished"] or [r.summary for r in runs if r.summary]
        row = {"setting": label, "runs": len(runs), "finished": sum(r.status == "finished" for r in runs),
               "params": done[0].params if done else None,
               "epochs": max((s.epochs_done for s in done), default=0),
               "test_every": runs[0].recipe.test_every}
        for key, (name, factor, digits) in SUMMARY_COLUMNS.items():
            mean, std = mean_std([None if getattr(s, key) is None else factor * getattr(s, key) for s in done])
            row[f"{name}_mean"], row[f"{name}_std"] = (None if v is None else round(v, digits) if digits else round(v)
                                                       for v in (mean, std))
        row["status"] = ",".join(sorted({r.status for r in runs}))
        rows.append(row)
    return rows


def _pm(mean: float | None, std: float | None, digits: int = 2) -> str:
    if mean is None:
        return "-"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def seen_every(test_every: set[int]) -> str:
    """'every 10 epochs' for the test_every values of some runs (0, off, aside), or 'every test_every epochs'."""
    values = test_every - {0}
    return f"every {next(iter(values))} epochs" if len(values) == 1 else "every test_every epochs"


def markdown_table(rows: list[dict], columns: list[str] = (), first: str = "setting") -> str:
    """The summary rows as a Markdown table headed `first`; `columns` are extra row keys shown after it."""
    seen = f"best test acc seen {seen_every({r['test_every'] for r in rows})} (%)"
    head = [first, *columns, "runs", "final test acc (%)", seen, "best test acc (%)", "final test loss", "params",
            "epochs", "train time (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        runs = f"{r['finished']}/{r['runs']}" + ("" if r["finished"] == r["runs"] else f" ({r['status']})")
        cells = [r["setting"], *(str(r.get(c, "")) for c in columns), runs,
                 _pm(r["final_test_acc_pct_mean"], r["final_test_acc_pct_std"]),
                 _pm(r["best_seen_test_acc_pct_mean"], r["best_seen_test_acc_pct_std"]),
                 _pm(r["best_test_acc_pct_mean"], r["best_test_acc_pct_std"]),
                 _pm(r["final_test_loss_mean"], r["final_test_loss_std"], digits=3),
                 f"{r['params']:,}" if r["params"] else "-", str(r["epochs"]),
                 _pm(r["train_seconds_mean"], r["train_seconds_std"], digits=0)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_csv(rows: list[dict], path: Path, extra: dict | None = None) -> Path:
    """The summary rows as CSV, each prefixed by the `extra` columns (e.g. experiment and scale)."""
    rows = [{**(extra or {}), **r} for r in rows]
    with atomic.replacing(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else list(extra or {}))
        writer.writeheader()
        writer.writerows(rows)
    return path


# ---- figures ------------------------------------------------------------------------------------

def _metric_rows(groups: dict[str, list[RunRecord]]) -> dict[str, list[list[MetricRow]]]:
    return {label: [run.metrics for run in runs] for label, runs in groups.items()}


def schedule_curve(recipe: Recipe, points: int = 4000) -> tuple[list[float], list[float]]:
    """(epochs, lr) of a recipe's schedule as training steps it, at most `points` samples, without training: the
    learning rate of the first parameter group (the one a run logs) of the real optimizer and schedule, built
    over the recipe's model on the meta device."""
    with torch.device("meta"):
        model = ResNet(recipe.model)
    optimizer, scheduler, steps_per_epoch, total = build_optimization(model, recipe, split_size(recipe.data, "train"))
    steps = range(0, total + 1, max(1, total // points))
    lrs = []
    for step in steps:
        scheduler.load_state_dict({"last_epoch": step})
        lrs.append(optimizer.param_groups[0]["lr"])
    return [s / steps_per_epoch for s in steps], lrs


def plot_lr(groups: dict[str, list[RunRecord]], path: Path, title: str) -> Path:
    """Each setting's learning rate: its schedule per step (line) and what its runs logged at each epoch's end
    (markers); a log axis when the base learning rates differ more than tenfold (SGD 0.1 vs Adam 1e-3).
    A schedule equal to an earlier setting's is drawn thin on top of a wide one and says whose it equals."""
    fig, ax = plots.subplots(figsize=(12, 4.8))
    colours = plots.colours(list(groups))
    curves = {label: schedule_curve(runs[0].recipe) for label, runs in groups.items()}
    for i, (label, runs) in enumerate(groups.items()):
        recipe = runs[0].recipe
        epochs, lrs = curves[label]
        same = [other for other in list(curves)[:i] if curves[other] == curves[label]]
        shared = any(curves[other] == curves[label] for other in list(curves)[i + 1:])
        ax.plot(epochs, lrs, color=colours[label], lw=4.5 if shared and not same else 1.6, zorder=2 + i,
                ls=["-", "--", ":", "-."][i % 4],
                label=f"{label} ({recipe.optimizer.name}, {recipe.schedule.name}, peak lr {max(lrs):.3g})"
                      + (f", the same schedule as {same[0]}" if same else ""))
        logged = [(r.epoch, r.lr) for r in runs[0].metrics]
        if logged:
            ax.plot(*zip(*logged), "o", color=colours[label], ms=4, mfc="none")
    ax.plot([], [], "o", color="grey", mfc="none", label="logged by the runs at epoch ends")
    peaks = [max(lrs) for _, lrs in curves.values()]
    log = max(peaks) > 10 * min(peaks)
    if log:
        ax.set_yscale("log", nonpositive="clip")
        ax.set_ylim(bottom=min(peaks) / 1000)
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate" + (" (log scale)" if log else ""))
    ax.set_title(title)
    ax.grid(alpha=plots.GRID_ALPHA)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    return plots.save(fig, path)


def plot_accuracy_bars(rows: list[dict], path: Path, title: str, published: dict[str, float] | None = None,
                   figure: Literal["final", "best_seen"] = "final") -> Path:
    """Test accuracy per setting as bars with the std over seeds, values written on the bars: the final one, or
    with `figure="best_seen"` the best seen every `test_every` epochs; `published` (setting -> percent) marks the
    study's value of a setting with a black diamond."""
    key = f"{figure}_test_acc_pct"
    rows = [r for r in rows if r[f"{key}_mean"] is not None]
    colours = plots.colours([r["setting"] for r in rows])
    fig, ax = plots.subplots(figsize=(8, 1.2 + 0.6 * len(rows)))
    means = [r[f"{key}_mean"] for r in rows]
    stds = [r[f"{key}_std"] or 0.0 for r in rows]
    y = range(len(rows))
    ax.barh(y, means, xerr=stds if any(stds) else None, color=[colours[r["setting"]] for r in rows], capsize=4)
    for i, (m, s, r) in enumerate(zip(means, stds, rows)):
        ax.text(m + s + 0.5, i, f"{m:.2f}%" + (f" ± {s:.2f}" if r[f"{key}_std"] is not None else ""),
                va="center", fontsize=9)
    marked = [(i, published[r["setting"]]) for i, r in enumerate(rows) if (published or {}).get(r["setting"])]
    if marked:
        ax.plot([v for _, v in marked], [i for i, _ in marked], "D", color="black", ms=7, label="the study's published value")
        ax.legend(fontsize=8, loc="lower right")
    ax.set_yticks(list(y), [r["setting"] for r in rows])
    ax.invert_yaxis()
    top = max([*means, *(v for _, v in marked)], default=0)
    ax.set_xlim(0, min(100, top + max(stds, default=0) + 15))
    ax.set_xlabel("final test accuracy (%)" if figure == "final"
                  else f"best test accuracy seen {seen_every({r['test_every'] for r in rows})} (%)")
    ax.set_title(title)
    ax.grid(axis="x", alpha=plots.GRID_ALPHA)
    return plots.save(fig, path)


def plot_params_vs_acc(rows: list[dict], path: Path, title: str) -> Path:
    """Final test accuracy against trainable parameters, one labelled point per setting."""
    rows = [r for r in rows if r["final_test_acc_pct_mean"] is not None and r["params"]]
    colours = plots.colours([r["setting"] for r in rows])
    fig, ax = plots.subplots(figsize=(8, 5))
    for r in rows:
        ax.errorbar(r["params"], r["final_test_acc_pct_mean"], yerr=r["final_test_acc_pct_std"], fmt="o",
                    color=colours[r["setting"]], capsize=3, label=r["setting"])
        ax.annotate(r["setting"], (r["params"], r["final_test_acc_pct_mean"]), xytext=(6, 4),
                    textcoords="offset points", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (log scale)")
    ax.set_ylabel("final test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=plots.GRID_ALPHA, which="both")
    ax.legend(fontsize=8)
    return plots.save(fig, path)


# ---- TensorBoard ------------------------------------------------------------------------------

def export_tensorboard(runs: list[RunRecord], log_dir: str | Path) -> Path:
    """Write each run's per-epoch metrics as TensorBoard events in log_dir/<run label>/ (needs the optional
    `tensorboard` package: pip install budgetnet[tensorboard])."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise RecipeError("--tensorboard needs the tensorboard package: pip install 'budgetnet[tensorboard]'") from None
    log_dir = Path(log_dir)
    for label, run in zip(run_labels(runs), runs):
        with SummaryWriter(log_dir / label.replace("/", "_")) as writer:
            for row in run.metrics:
                for key, value in row.to_dict().items():
                    if key != "epoch" and isinstance(value, (int, float)):
                        group = "loss" if key.endswith("_loss") else "accuracy" if key.endswith("_acc") else "train"
                        writer.add_scalar(f"{group}/{key}", value, row.epoch)
            writer.add_text("recipe", "    " + recipe_yaml(run.recipe).replace("\n", "\n    "))
    return log_dir


# ---- reports ------------------------------------------------------------------------------------

def designs_differ(groups: dict[str, list[RunRecord]]) -> bool:
    return len({json.dumps(runs[0].recipe.model.to_dict(), sort_keys=True) for runs in groups.values()}) > 1


PLOTS: dict[str, Callable[[dict[str, list[RunRecord]], list[dict], Path, str], Path]] = {
    "curves": lambda g, rows, p, t: plots.plot_curves(_metric_rows(g), ["train_loss", "test_loss", "train_acc",
                                                                        "test_acc"], p, t),
    "test_curves": lambda g, rows, p, t: plots.plot_curves(_metric_rows(g), ["test_acc", "test_loss"], p, t),
    "lr": lambda g, rows, p, t: plot_lr(g, p, t),
    "final_acc": lambda g, rows, p, t: plot_accuracy_bars(rows, p, t),
    "params_vs_acc": lambda g, rows, p, t: plot_params_vs_acc(rows, p, t),
}
PLOT_TITLES = {"curves": "loss and accuracy per epoch", "test_curves": "test accuracy and loss per epoch",
               "lr": "learning rate per epoch", "final_acc": "final test accuracy",
               "params_vs_acc": "parameters vs final test accuracy"}


def draw(groups: dict[str, list[RunRecord]], rows: list[dict], plots: list[str], out: Path, title: str) -> list[Path]:
    """Write the named figures as out/<name>.png, each titled '<title>: <what it shows>'."""
    return [PLOTS[name](groups, rows, out / f"{name}.png", f"{title}: {PLOT_TITLES[name]}") for name in plots]


def report(runs: list[RunRecord], out: str | Path, title: str = "run comparison") -> Path:
    """Compare runs: out/report.md (table and figures), curves.png, lr.png, params_vs_acc.png when the
    designs differ, and robustness.png when runs hold corruption results."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    groups = dict(zip(run_labels(runs), ([r] for r in runs)))
    rows = setting_rows(groups)
    plots = ["curves", "lr"] + (["params_vs_acc"] if designs_differ(groups) else [])
    figures = draw(groups, rows, plots, out, title)
    evaluations = [(r.path, RunFiles(r.path).read_eval()) for r in runs]
    robust = [path for path, e in evaluations if e is not None and e.per_corruption is not None]
    if robust:  # runs evaluated with `budgetnet eval --corruptions`: their corruption errors side by side
        from ..evaluation.robustness import compare_robustness
        figures.append(compare_robustness(robust, out))
    write_csv(rows, out / "report.csv")
    lines = [f"# {title}", "", markdown_table(rows, first="run"), "",
             TABLE_NOTE, "",
             "| run | path | description |", "|---|---|---|",
             *(f"| {label} | {r.path} | {r.recipe.description} |" for label, r in zip(groups, runs)), "",
             *(f"![{f.stem}]({f.name})" for f in figures), ""]
    atomic.write_text(out / "report.md", "\n".join(lines))
    return out / "report.md"
