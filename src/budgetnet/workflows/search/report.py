"""What a study found, from its storage: trials by outcome, the top designs (and which the validation split cannot
tell from the best), the Pareto fronts of validation accuracy against training PFLOP and against parameters with a
table of each front's designs, and the parameter importances, as search.md, best-recipe.yaml and figures; and the
lines a worker prints when it stops."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import optuna
import yaml
from matplotlib.ticker import EngFormatter, LogLocator
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from ... import atomic, plots
from ...config import from_dict
from ...design.spec import ModelSpec
from .space import describe
from .storage import TrialAttrs, load_study, optuna_quiet, shown_url, unpack_correct


def trained(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The completed trials that trained their design (not a repeat of an earlier trial's values)."""
    return [t for t in trials if t.state == TrialState.COMPLETE and TrialAttrs.of(t).duplicate_of is None]


def trial_counts(trials: list[FrozenTrial]) -> dict[str, int]:
    """Trials by outcome: completed (trained, or repeating an earlier trial's values untrained), pruned by the
    pruner, rejected before training, repaired, failed, running."""
    attrs = [TrialAttrs.of(t) for t in trials]
    rejected = [a.rejected for a in attrs]
    return {"trials": len(trials),
            "complete": len(trained(trials)),
            "duplicate": sum(a.duplicate_of is not None for a in attrs),
            "pruned": sum(t.state == TrialState.PRUNED and r is None for t, r in zip(trials, rejected)),
            "rejected_over_budget": rejected.count("over_budget"),
            "rejected_invalid": rejected.count("invalid_design"),
            "repaired": sum(a.repaired is not None for a in attrs),
            "failed": sum(t.state == TrialState.FAIL for t in trials),
            "running": sum(t.state == TrialState.RUNNING for t in trials)}


def worker_summary(study: optuna.Study, out: str | Path, storage: str | None) -> str:
    """What a worker prints when it stops: the study's counts, its best trial and the report command."""
    counts = trial_counts(study.get_trials(deepcopy=False))
    done = trained(study.get_trials(deepcopy=False))
    best = max(done, key=lambda t: t.value) if done else None
    where = f" --storage '{shown_url(storage)}'" if storage else ""  # else $BUDGETNET_STORAGE or OUT/search.db
    return "\n".join([
        f"study {study.study_name}: " + ", ".join(f"{v} {k}" for k, v in counts.items()),
        f"best: trial {best.number}, val acc {best.value:.4f}, {TrialAttrs.of(best).params:,} params, {best.params}"
        if best else "no trial completed yet",
        f"report: budgetnet search-report{where} --study {study.study_name} --out {out}"])


def paired_difference(right_a: np.ndarray, right_b: np.ndarray) -> tuple[float, float]:
    """(accuracy of a - accuracy of b, its standard error) of two models scored on the same images (bools: right
    or wrong), from the images only one of them gets right: sqrt(only_a + only_b - (only_a - only_b)^2 / n) / n,
    the paired comparison's error, well under two independent accuracies' when the models agree on most images."""
    n = len(right_a)
    only_a, only_b = int((right_a & ~right_b).sum()), int((right_b & ~right_a).sum())
    return (only_a - only_b) / n, math.sqrt(only_a + only_b - (only_a - only_b) ** 2 / n) / n


TIE = 2.0  # standard errors: a design closer than this to the best is not ranked below it by the split


def versus_best(done: list[FrozenTrial]) -> dict[int, tuple[float, float]]:
    """Each trained trial's paired difference in validation accuracy from the best (`done[0]`) and its standard
    error, where both recorded their right and wrong validation images on the same split (`val_correct`)."""
    best = TrialAttrs.of(done[0]) if done else None
    if best is None or best.val_correct is None:
        return {}
    n = best.recipe["data"]["val_size"]
    right = unpack_correct(best.val_correct, n)
    return {t.number: paired_difference(unpack_correct(a.val_correct, n), right) for t in done
            if (a := TrialAttrs.of(t)).val_correct is not None and a.recipe["data"] == best.recipe["data"]}


def pareto_front(points: list[tuple[int, float]]) -> list[int]:
    """Indices of the (params, accuracy) points no other point beats on both (fewer params, higher accuracy)."""
    front, best = [], -math.inf
    for i in sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1])):
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


@optuna_quiet()
def search_report(storage: str, out: str | Path, study_name: str | None = None, top: int = 10) -> dict:
    """Write OUT/search.md, pareto.png and importances.png for a study; return the counts, best trial and front."""
    study = load_study(storage, study_name)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    trials = study.get_trials(deepcopy=False)
    counts = trial_counts(trials)
    done = sorted(trained(trials), key=lambda t: -t.value)
    fronts = {axis: _front(done, key) for axis, (key, _) in AXES.items()}
    front = fronts["params"]
    budget, max_gflops = study.user_attrs.get("budget"), study.user_attrs.get("max_gflops")
    _plot_fronts(study.study_name, trials, done, fronts, budget, out / "pareto.png")
    importances = _importances(study.study_name, done, out / "importances.png")

    lines = [f"# Search `{study.study_name}`", "",
             f"Storage `{shown_url(storage)}`, space `{study.user_attrs.get('space', '?')}`"
             + (f", budget {budget:,} parameters" if budget else "")
             + (f", max {max_gflops:g} GFLOP per image (forward+backward)" if max_gflops else "") + ".",
             "The objective is the best validation accuracy (data.val_size images held out of the training set); "
             "the test set chose nothing, its final accuracy is shown for reference.", "",
             "| " + " | ".join(counts) + " |", "|" + "---:|" * len(counts),
             "| " + " | ".join(str(v) for v in counts.values()) + " |", "",
             *(["Running trials whose worker died stay so until a worker runs again: it marks them failed.", ""]
               if counts["running"] else []),
             f"## Top {min(top, len(done))} designs", "",
             "| rank | trial | params | val acc | vs best (s.e.) | test acc | design | sampled | run directory |",
             "|---:|---:|---:|---:|---:|---:|---|---|---|"]
    versus = versus_best(done)
    for rank, t in enumerate(done[:top], 1):
        a = TrialAttrs.of(t)
        vs = "best" if rank == 1 and versus else _versus(versus.get(t.number))
        lines.append(f"| {rank} | {t.number} | {a.params:,} | {t.value:.4f} | {vs} | "
                     f"{_fmt(a.test_acc)} | {_design(t)} | {_sampled(t)} | `{a.run_dir}` |")
    ties = [n for n, (d, se) in versus.items() if n != done[0].number and -d <= TIE * se]
    if versus:
        lines += ["", f"vs best: the difference from trial {done[0].number}'s validation accuracy, in points, image by "
                  "image on the same split, and its standard error. "
                  + (f"Within {TIE:g} standard errors of the best, the split does not rank "
                     f"{'trials' if len(ties) > 1 else 'trial'} {', '.join(map(str, ties))} below it: retrain "
                     "those designs with the full recipe and two seeds before preferring one." if ties else
                     f"Every other trial is more than {TIE:g} standard errors below the best.")]
    lines += ["", "## Pareto fronts", "",
              "Validation accuracy against the compute a trial spent training (PFLOP: its forward+backward GFLOP "
              "per image times the images it trained on) and against its parameters; on each front no other "
              "completed trial has less of it and a higher validation accuracy.", "",
              "![accuracy vs training PFLOP and vs parameters](pareto.png)"]
    for axis, (_, title) in AXES.items():
        lines += ["", f"### Front of {title}", "", *_front_table(fronts[axis])]
    lines += ["", "## Parameter importances (PED-ANOVA, Optuna's default evaluator)", ""]
    if importances:
        lines += [f"- `{k}`: {v:.3f}" for k, v in importances.items()] + ["", "![importances](importances.png)"]
    else:
        lines.append("Not enough completed trials with varying parameters yet.")
    if done:
        first = TrialAttrs.of(done[0])
        atomic.write_text(out / "best-recipe.yaml", yaml.safe_dump(first.recipe, sort_keys=False))
        lines += ["", "## Reproduce the best design", "",
                  f"Trial {done[0].number}'s recipe, as the study stores it, is `best-recipe.yaml` beside this file; "
                  f"its run directory is `{first.run_dir}` under the search's --out. From this folder:",
                  "", "`budgetnet train --recipe best-recipe.yaml`"]
    atomic.write_text(out / "search.md", "\n".join(lines) + "\n")
    best = done[0] if done else None
    return {"study": study.study_name, "counts": counts, "importances": importances,
            "best": None if best is None else {"trial": best.number, "val_acc": best.value,
                                               "params": TrialAttrs.of(best).params, **best.params},
            "front": [t.number for t in front], "pflop_front": [t.number for t in fronts["pflop"]], "ties": ties,
            "report": str(out / "search.md")}


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _versus(difference: tuple[float, float] | None) -> str:
    return "-" if difference is None else f"{100 * difference[0]:+.2f} ({100 * difference[1]:.2f})"


def _g(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _design(t: FrozenTrial) -> str:
    a = TrialAttrs.of(t)
    return describe(from_dict(ModelSpec, a.recipe["model"])) + (f" ({a.repaired})" if a.repaired is not None else "")


def _sampled(t: FrozenTrial) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in t.params.items() if not k.startswith("model."))


AXES = {"pflop": ("train_pflop", "training PFLOP"), "params": ("params", "parameters")}  # TrialAttrs field, words


def _cost(t: FrozenTrial, key: str) -> float | None:
    """The trial's `key`, a TrialAttrs field of AXES."""
    return getattr(TrialAttrs.of(t), key)


def _front(done: list[FrozenTrial], key: str) -> list[FrozenTrial]:
    """The Pareto front of `key` (an AXES field; trials without it are left out) against validation accuracy."""
    known = [t for t in done if _cost(t, key) is not None]
    return [known[i] for i in pareto_front([(_cost(t, key), t.value) for t in known])]


def _front_table(front: list[FrozenTrial]) -> list[str]:
    """A markdown table of a front's trials: their design variables and what each cost."""
    if not front:
        return ["No completed trial records it."]
    lines = ["| trial | design variables | params | GFLOP/image | PFLOP | seconds | val acc |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for t in front:
        a = TrialAttrs.of(t)
        variables = ", ".join(f"{k.removeprefix('model.')}={v}" for k, v in t.params.items() if k.startswith("model."))
        lines.append(f"| {t.number} | {variables or _design(t)} | {a.params:,} | {_g(a.gflop_per_image)} | "
                     f"{_g(a.train_pflop)} | {'-' if a.train_seconds is None else f'{a.train_seconds:.0f}'} | "
                     f"{t.value:.4f} |")
    return lines


def _plot_fronts(name: str, trials: list[FrozenTrial], done: list[FrozenTrial],
                 fronts: dict[str, list[FrozenTrial]], budget: int | None, path: Path) -> None:
    """Validation accuracy against training PFLOP (left) and parameters (right), each front marked."""
    fig, axes = plots.subplots(1, 2, figsize=(13, 5), sharey=True)
    pruned = [t for t in trials if t.state == TrialState.PRUNED and t.intermediate_values]
    for ax, (axis, (key, title)) in zip(axes, AXES.items()):
        stopped = [t for t in pruned if _cost(t, key) is not None]
        if stopped:
            ax.scatter([_cost(t, key) for t in stopped],
                       [t.intermediate_values[max(t.intermediate_values)] for t in stopped],
                       marker="x", color="0.6", label="pruned (val acc when stopped)")
        shown = [t for t in done if _cost(t, key) is not None]
        ax.scatter([_cost(t, key) for t in shown], [t.value for t in shown], color="tab:blue", alpha=0.7,
                   label="completed trials")
        front = fronts[axis]
        if front:
            xs, ys = [_cost(t, key) for t in front], [t.value for t in front]
            ax.step(xs, ys, where="post", color="tab:red", lw=1.5)
            ax.scatter(xs, ys, color="tab:red", s=60, zorder=3, label="Pareto front")
            for i, t in enumerate(front):  # above and below in turn, so that neighbours' labels do not overlap
                ax.annotate(f"#{t.number}", (_cost(t, key), t.value), textcoords="offset points",
                            xytext=(4, 5 if i % 2 == 0 else -12), fontsize=8)
        if budget and axis == "params":
            ax.axvline(budget, color="k", ls="--", lw=1, label=f"budget {budget:,}")
        if shown:
            ax.set_xscale("log")
            ax.xaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))  # 1, 2, 5 labelled: readable over decades
            ax.xaxis.set_major_formatter(EngFormatter(sep=""))
            ax.xaxis.set_minor_formatter(EngFormatter(sep=""))
        ax.set_xlabel(f"{title} (log scale)" if shown else title)
        ax.set_title(f"study {name}: {title} vs accuracy")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    axes[0].set_ylabel("best validation accuracy")
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
