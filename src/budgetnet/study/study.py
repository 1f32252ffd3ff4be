"""The whole study by one command: its five experiments at one scale (each distinct run trained once), then
STUDY.md and study.csv with the study's published numbers beside ours, a verdict per row, and the figures.

    run_study("smoke", "runs/study-smoke")      # runs/, <experiment>/results.md, STUDY.md, study.csv, figures

Every row of the study appears twice: as the study trained it (the settings of its code history, CCGV2/DLProject1,
which change several factors at once) and as a controlled ablation (the seed recipe with one factor changed).
Ours are two figures: the final test accuracy and the best test accuracy seen every 10 epochs (the experiments'
test_every, chosen on the test set, as the study's scripts did); the published numbers, the study's highest, are
judged against the best seen. `judge` computes the results and verdicts; `study_csv_rows` and `study_markdown`
render them.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .. import atomic
from ..config import RecipeError, from_dict, load_recipe, read_yaml
from ..data.cifar import decoded_test_sha256, official_copy
from ..data.policies import AugMix
from ..errors import shown
from ..training.rundir import RunFiles
from ..workflows import report
from ..workflows.experiment.cost import cost_plan
from ..workflows.experiment.plan import PlannedRun, check_same_recipe, plan
from ..workflows.experiment.results import ExperimentResults, experiment_results, write_results
from ..workflows.experiment.runner import check_data, check_jobs, train_runs
from ..workflows.experiment.schema import Experiment, get_scale, load_experiment

EXPERIMENTS = ("augmentation", "optimizer", "batch-size", "lr-schedule", "final")
CONTROLLED, AS_TRAINED = "controlled", "as trained"


@dataclass(frozen=True)
class Row:
    """A row of the study: what it published and which setting of an experiment reproduces it in each reading."""

    experiment: str
    name: str
    published: float | None      # percent; None for a figure without a number
    source: str
    controlled: str              # the experiment's setting: the seed recipe with one factor changed
    as_trained: str | None       # the experiment's setting as the study's code trained the row
    reading: str                 # which reading (text or code) the row follows where they differ


@dataclass(frozen=True)
class DataCopy:
    """An unofficial copy of CIFAR-10 whose cost is measured, recognised by its decoded test images' sha256."""

    name: str
    test_sha256: str
    offset: float                # points the copy costs against the official release
    evidence: str                # the measurement behind the offset


@dataclass(frozen=True)
class Facts:
    """The study's published rows and the data copies whose offsets are known (study/facts.yaml)."""

    rows: tuple[Row, ...]
    data_copies: tuple[DataCopy, ...]


@functools.cache
def load_facts() -> Facts:
    """study/facts.yaml, checked as a recipe is: a missing, unknown or mistyped key is one line naming it."""
    raw, path = read_yaml("facts", "facts")
    unknown = set(raw) - {"rows", "data_copies"}
    if unknown or not isinstance(raw.get("rows"), list) or not isinstance(raw.get("data_copies", []), list):
        raise RecipeError(f"{path}: must hold the lists 'rows' and 'data_copies'"
                          + (f", not {', '.join(map(shown, sorted(unknown)))}" if unknown else ""))
    return Facts(tuple(_fact(Row, entry, f"{path}: rows[{i}]") for i, entry in enumerate(raw["rows"])),
                 tuple(_fact(DataCopy, entry, f"{path}: data_copies[{i}]")
                       for i, entry in enumerate(raw.get("data_copies", []))))


def _fact(cls: type, entry: object, where: str) -> Any:
    fields = {f.name for f in dataclasses.fields(cls)}
    if not isinstance(entry, dict) or set(entry) != fields:
        got = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
        raise RecipeError(f"{where} must set exactly {', '.join(sorted(fields))}; it has {shown(got)}")
    return from_dict(cls, entry, f"{where}.")


@dataclass(frozen=True)
class DataVerdict:
    """What the study knows of the data its runs trained on: the points to take off the published numbers and
    STUDY.md's paragraph saying why."""

    offset: float
    text: str


def data_verdict(official: bool | None, test_sha256: str | None = None) -> DataVerdict:
    """The offset of the data copy (`official`: data.cifar.official_copy's verdict; `test_sha256`: the copy's
    data.cifar.decoded_test_sha256): a copy listed in facts.yaml gets its measured offset, any other copy none."""
    if official is None:
        return DataVerdict(0.0, "No data folder was found, so the copy the runs trained on is unknown: no offset "
                                "is applied, and the study's numbers are the targets as published.")
    if official:
        return DataVerdict(0.0, "The data is the official CIFAR-10 release (every md5 sum as published): the "
                                "study's numbers are the targets as published.")
    known = next((c for c in load_facts().data_copies if c.test_sha256 == test_sha256), None)
    if known is None:
        return DataVerdict(0.0, "The data is not the official release (its md5 sums differ), and no offset is known "
                                "for this copy (its test images are none of those whose cost budgetnet has "
                                "measured): the study's numbers are the targets as published.")
    return DataVerdict(known.offset, f"The data is not the official release (its md5 sums differ): it is "
                       f"{known.name}, which costs about {known.offset} points ({known.evidence}): on it, expect the "
                       f"study's numbers less {known.offset}.")


def verdict_rule(offset: float) -> str:
    """The rule the verdicts follow; `offset`: points the data copy costs (0 on the official files)."""
    target = (f"the published value less the {offset} points the data copy costs" if offset
              else "the published value")
    return ("The published numbers are the study's highest test accuracies, so they are judged against our best "
            "seen. A conclusion **holds** at a scale when, for every pair of rows whose published values differ, "
            "our best-seen means rank as the study's do and the gap between them exceeds the sum of their "
            "standard deviations over seeds (two seeds or more each); the final model's holds when our best-seen "
            f"mean reaches {target}. Otherwise it is **inconclusive** at that scale, with the reason. A row's "
            "verdict covers the pairs it is part of.")


@dataclass(frozen=True)
class Figure:
    """A test accuracy over seeds: mean and sample std in percent (std only with two seeds or more)."""

    mean: float | None
    std: float | None
    seeds: int

    @classmethod
    def of(cls, accs: list[float]) -> Figure:
        """The figure of accuracies given as fractions, as summary.json holds them."""
        mean, std = report.mean_std([100 * a for a in accs])
        return cls(mean, std, len(accs))


@dataclass
class Result:
    """Our figures for one row in one reading, over the runs that finished: the final test accuracy and the best
    test accuracy seen every test_every epochs (chosen on the test set, as the study did), which is judged."""

    row: Row
    reading: str
    setting: str
    final: Figure
    best_seen: Figure    # None's for runs that did not record it (test_every 0, or from before test_every)
    runs: list[PlannedRun]

    @property
    def difference(self) -> float | None:
        """Our best seen less the published value."""
        mean = self.best_seen.mean
        return None if mean is None or self.row.published is None else mean - self.row.published


# ---- planning ------------------------------------------------------------------------------------

def plan_study(scale: str, out: Path, overrides: list[str] = ()) -> dict[str, tuple[Experiment, list[PlannedRun]]]:
    """Every experiment's runs at `scale`, with runs of the same recipe (e.g. the seed recipe, which five rows
    share) pointed at one directory out/runs/<first experiment>-<run>, so each is trained once."""
    planned, shared = {}, {}
    for name in EXPERIMENTS:
        exp = load_experiment(name)
        runs = plan(exp, scale, out / name, overrides)
        for run in runs:
            key = json.dumps({k: v for k, v in run.recipe.to_dict().items() if k != "description"}, sort_keys=True)
            run.path = shared.setdefault(key, out / "runs" / f"{name}-{run.name}")
            check_same_recipe(run)
        planned[name] = (exp, runs)
    return planned


def distinct_runs(planned: dict[str, tuple[Experiment, list[PlannedRun]]]) -> list[PlannedRun]:
    """One planned run per run directory (the first experiment's), in experiment order."""
    first: dict[Path, PlannedRun] = {}
    for _, runs in planned.values():
        for run in runs:
            first.setdefault(run.path, run)
    return list(first.values())


def why_too_small(planned: dict[str, tuple[Experiment, list[PlannedRun]]]) -> str | None:
    """Why the scale is too small to judge the study's conclusions, or None when it can judge them: it needs the
    study's design (the seed recipe's), all of the training and test images, and two seeds or more."""
    seed = load_recipe("seed")
    runs = [run for _, rs in planned.values() for run in rs]
    reasons = []
    if any(r.recipe.model != seed.model for r in runs):
        design = runs[0].recipe.model
        reasons.append(f"it trains a {len(design.blocks)}-stage ResNet with C_1={design.channels} "
                       f"({design.count_params():,} parameters), not the study's ResNet-18 with C_1=42")
    small = [r.recipe.data for r in runs if r.recipe.data.train_size or r.recipe.data.test_size]
    if small:
        reasons.append(f"on {small[0].train_size or 'all'} training and {small[0].test_size or 'all'} test images")
    if min(len({r.seed for r in rs}) for _, rs in planned.values()) < 2:
        reasons.append("with one seed, so no spread to compare gaps with")
    epochs = sorted({r.recipe.epochs for r in runs})
    if reasons:
        reasons.append(f"for {epochs[0]}-{epochs[-1]} epochs" if len(epochs) > 1 else f"for {epochs[0]} epochs")
    return "; ".join(reasons) or None


# ---- results ---------------------------------------------------------------------------------------

def results(planned: dict[str, tuple[Experiment, list[PlannedRun]]]) -> list[Result]:
    """Our figure for every row of the study in both readings, from the run directories as they are."""
    out = []
    for row in load_facts().rows:
        _, runs = planned[row.experiment]
        for reading, setting in ((AS_TRAINED, row.as_trained), (CONTROLLED, row.controlled)):
            if setting is None:
                continue
            mine = [r for r in runs if r.setting.label.split("=", 1)[-1] == setting]
            if not mine:
                raise RecipeError(f"experiment {row.experiment} has no setting {setting!r} for the study's row "
                                  f"{row.name!r}")
            summaries = [RunFiles(r.path).read_summary() for r in mine]
            finished = [s for s in summaries if s is not None and s.status == "finished"]
            out.append(Result(row, reading, setting, Figure.of([s.final_test_acc for s in finished]),
                              Figure.of([s.best_seen_test_acc for s in finished
                                         if s.best_seen_test_acc is not None]), mine))
    return out


def _missing(result: Result) -> str | None:
    """Why a result has no best-seen figure to judge, or None when it has one."""
    if result.best_seen.mean is not None:
        return None
    return ("not all runs finished" if result.final.mean is None
            else "no best seen test accuracy recorded (runs without test_every)")


def _pair_verdict(a: Result, b: Result) -> str | None:
    """None when a's best seen exceeds b's (the study's order) by more than their spread, else why not."""
    missing = _missing(a) or _missing(b)
    if missing:
        return missing
    a_seen, b_seen = a.best_seen, b.best_seen
    if a_seen.seeds < 2 or b_seen.seeds < 2:
        return "one seed: no spread"
    gap, spread = a_seen.mean - b_seen.mean, a_seen.std + b_seen.std
    if gap <= 0:
        return f"{a.row.name} below {b.row.name} by {-gap:.2f}"
    if gap <= spread:
        return f"{a.row.name} above {b.row.name} by {gap:.2f}, within the spread {spread:.2f}"
    return None


def verdict(result: Result, same_reading: list[Result], too_small: str | None, offset: float) -> str:
    """Whether the study's conclusion involving this row holds in this reading, on the best-seen figures
    (verdict_rule(offset)); `too_small`: why_too_small's reason, when the scale cannot judge."""
    row = result.row
    if row.published is None:
        return f"no number published ({row.source} shows curves)"
    if too_small:
        return "not judged: scale too small"
    if row.experiment == "final":
        seen = result.best_seen
        if seen.mean is None:
            return "inconclusive: " + ("not finished" if result.final.mean is None else _missing(result))
        if seen.seeds < 2:
            return "inconclusive: one seed"
        target = row.published - offset
        return "holds" if seen.mean >= target else f"inconclusive: {target - seen.mean:.2f} short of {target:.1f}"
    reasons = []
    for other in same_reading:
        if other is result or other.row.published is None or other.row.published == row.published:
            continue
        high, low = (result, other) if row.published > other.row.published else (other, result)
        why = _pair_verdict(high, low)
        if why and why not in reasons:
            reasons.append(why)
    return "holds" if not reasons else "inconclusive: " + "; ".join(reasons)


def conclusion(rows: list[Row], offset: float) -> str:
    """The study's conclusion over rows with numbers: their published order."""
    ranked = sorted((r for r in rows if r.published is not None), key=lambda r: -r.published)
    if len(ranked) == 1:
        on_copy = f" ({ranked[0].published - offset:.1f}% on this data copy)" if offset else ""
        return f"{ranked[0].name} reaches {ranked[0].published:g}%{on_copy}"
    text = ranked[0].name if ranked else ""
    for prev, row in zip(ranked, ranked[1:]):
        text += (" = " if row.published == prev.published else " > ") + row.name
    return text


def _cell(figure: Figure | None) -> str:
    if figure is None or figure.mean is None:
        return "-"
    spread = f" ± {figure.std:.2f}" if figure.std is not None else ""
    return f"{figure.mean:.2f}{spread} ({figure.seeds} seed{'s' if figure.seeds != 1 else ''})"


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}"


def trained(run: PlannedRun) -> str:
    """What a run trains, in a few words, from its recipe."""
    r = run.recipe
    augment = " + ".join(a.name + (" (JSD)" if isinstance(a, AugMix) and a.jsd else "") for a in r.augment) or "none"
    opt = r.optimizer
    optimizer = f"{'Nesterov ' if opt.name == 'sgd' and opt.nesterov else ''}{opt.name} lr {opt.lr:g}"
    schedule = r.schedule.name + (f" (T_0 {r.schedule.T_0:g}, T_mult {r.schedule.T_mult})"
                                  if r.schedule.name == "warm_restarts" else "")
    return f"{augment}; {optimizer}, {schedule}; batch {r.batch_size}; {r.epochs} epoch{'s' if r.epochs > 1 else ''}"


@dataclass(frozen=True)
class RowVerdict:
    """A line of study.csv and a cell group of STUDY.md: our result for one row in one reading, and its verdict."""

    result: Result
    verdict: str


@dataclass(frozen=True)
class Conclusion:
    """The study's conclusion of one experiment, in one reading (or "both"), and whether it holds at the scale."""

    experiment: str
    text: str
    reading: str
    verdict: str


@dataclass
class Judgement:
    """What STUDY.md and study.csv report, computed from the run directories as they are."""

    scale: str
    data: DataVerdict           # the data copy's offset and what STUDY.md says of it
    too_small: str | None       # why_too_small's reason, when the scale cannot judge
    seen_every: str             # "every 10 epochs": how often the runs recorded the best-seen figure
    judged: list[RowVerdict]    # in the order of the facts' rows, as trained before controlled
    conclusions: list[Conclusion]


def judge(scale: str, planned: dict[str, tuple[Experiment, list[PlannedRun]]], data: DataVerdict) -> Judgement:
    """Every row's result and verdict and every experiment's conclusion, at `scale`, on `data` (verdict_rule)."""
    offset = data.offset
    too_small = why_too_small(planned)
    all_results = results(planned)
    judged = [RowVerdict(res, verdict(res, [r for r in all_results if r.row.experiment == res.row.experiment
                                        and r.reading == res.reading], too_small, offset)) for res in all_results]
    conclusions = []
    for name in EXPERIMENTS:
        rows = [r for r in load_facts().rows if r.experiment == name]
        if not any(row.published is not None for row in rows):
            conclusions.append(Conclusion(name, f"{rows[0].source}: curves, no number", "both", "nothing to judge"))
            continue
        for reading in (AS_TRAINED, CONTROLLED):
            vs = [j.verdict for j in judged if j.result.row.experiment == name and j.result.reading == reading
                  and j.result.row.published is not None]
            conclusions.append(Conclusion(name, conclusion(rows, offset), reading,
                                          "not judged: scale too small" if too_small
                                          else "holds" if all(v == "holds" for v in vs) else "inconclusive"))
    every = report.seen_every({run.recipe.test_every for _, runs in planned.values() for run in runs})
    return Judgement(scale, data, too_small, every, judged, conclusions)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def study_csv_rows(judgement: Judgement) -> list[dict]:
    """study.csv's rows: one per row of the study and reading, accuracies in percent; the difference and the
    verdict are of the best seen."""
    return [{"scale": judgement.scale, "experiment": res.row.experiment, "row": res.row.name,
             "source": res.row.source, "reading": res.reading, "setting": res.setting,
             "published_pct": res.row.published, "final_pct_mean": _round(res.final.mean),
             "final_pct_std": _round(res.final.std), "seeds": res.final.seeds,
             "best_seen_pct_mean": _round(res.best_seen.mean), "best_seen_pct_std": _round(res.best_seen.std),
             "best_seen_seeds": res.best_seen.seeds, "best_seen_every": judgement.seen_every,
             "best_seen_minus_published_pct": _round(res.difference), "verdict": verdict}
            for res, verdict in ((j.result, j.verdict) for j in judgement.judged)]


def _experiment_section(name: str, judgement: Judgement, figure: Path | None) -> list[str]:
    """STUDY.md's section of one experiment: its rows in both readings, what each trained, its figure."""
    rows = [r for r in load_facts().rows if r.experiment == name]
    mine = {(j.result.row, j.result.reading): j for j in judgement.judged if j.result.row.experiment == name}
    seen = f"best seen {judgement.seen_every} (%)"
    lines = [f"## {name}: the study's {', '.join(dict.fromkeys(r.source for r in rows))}", "",
             f"| the study's row | published (%) | as the study trained it: final (%) | {seen} | best seen − "
             f"published | verdict | controlled: final (%) | {seen} | best seen − published | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        cells = [row.name, "-" if row.published is None else f"{row.published:.2f}"]
        for reading in (AS_TRAINED, CONTROLLED):
            j = mine.get((row, reading))
            cells += ([_cell(j.result.final), _cell(j.result.best_seen), _signed(j.result.difference), j.verdict]
                      if j else ["-"] * 4)
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "What each row trained at this scale, and which reading it follows:", ""]
    for row in rows:
        for j in (j for (r, _), j in mine.items() if r == row):
            lines.append(f"- {row.name}, {j.result.reading} (`{j.result.setting}`): {trained(j.result.runs[0])}")
        lines.append(f"  - reading: {row.reading}")
    lines += ["", f"Figures and the per-setting table: [{name}/results.md]({name}/results.md)", ""]
    if figure:
        lines += [f"![{name}]({name}/{figure.name})", ""]
    return lines


def study_markdown(judgement: Judgement, out: Path, planned: dict[str, tuple[Experiment, list[PlannedRun]]],
                   figures: dict[str, Path | None]) -> str:
    """STUDY.md: the scale's standing, the runs' cost, how to read the figures, the conclusions, then one section
    per experiment (`figures`: each experiment's study.png, where it has one)."""
    scale, offset, too_small, every = judgement.scale, judgement.data.offset, judgement.too_small, judgement.seen_every
    runs = distinct_runs(planned)
    summaries = [s for r in runs if (s := RunFiles(r.path).read_summary()) is not None]
    seconds = sum(s.train_seconds or 0 for s in summaries)
    finished = sum(s.status == "finished" for s in summaries)
    devices = sorted({s.device or "?" for s in summaries}) or ["none yet"]
    test_every = max((r.recipe.test_every for r in runs), default=0)
    scale_line = (f"> **The {scale} scale is too small to judge the study's conclusions**: {too_small}. Its "
                  "numbers show that the pipeline runs end to end, not whether the study holds." if too_small else
                  f"> The {scale} scale trains the study's design on all the data with two seeds or more: its "
                  "verdicts judge the study's conclusions at this many epochs.")
    shorter = (f" At this scale every run is shorter than {test_every} epochs, so its best seen is its last "
               "epoch's test accuracy without TTA." if test_every and max(r.recipe.epochs for r in runs) < test_every
               else "")
    lines = [f"# The study reproduced — {scale} scale", "", scale_line, "",
             f"Reproduce with `budgetnet study --scale {scale} --out {out}`. {finished} of {len(runs)} distinct "
             f"runs finished (the five experiments plan {sum(len(rs) for _, rs in planned.values())} runs; those "
             f"of the same recipe are trained once); {round(seconds):,} s of training on {', '.join(devices)}.", "",
             f"**Two figures per row** (percent, mean ± std over seeds; std only with two seeds or more): the "
             f"*final* test accuracy (the last epoch's) and the *best seen*, the best test accuracy seen {every} "
             f"(chosen on the test set, as the study did: its scripts test every 10 epochs and its text reports "
             f"the highest accuracy). The published numbers are the study's highest, so they are judged against "
             f"the best seen; the differences are our best seen less the published value.{shorter}", "",
             f"**Data.** {judgement.data.text}", "",
             "**Two readings per row.** *As the study trained it*: the settings of the study's own runs "
             "(CCGV2/DLProject1, model1-model8), which change augmentation, optimizer, learning rate, batch size "
             "and epochs at once. *Controlled*: the seed recipe (the study's final model7) with only the row's "
             "factor changed. Where the study's text and code differ, each row says which it follows.", "",
             f"**Verdict rule.** {verdict_rule(offset)}", "",
             "| experiment | the study's conclusion | reading | verdict |", "|---|---|---|---|",
             *(f"| {c.experiment} | {c.text} | {c.reading} | {c.verdict} |" for c in judgement.conclusions), ""]
    for name in EXPERIMENTS:
        lines += _experiment_section(name, judgement, figures.get(name))
    return "\n".join(lines)


def write_study(scale: str, out: Path, planned: dict[str, tuple[Experiment, list[PlannedRun]]],
                data: DataVerdict) -> Path:
    """out/STUDY.md and out/study.csv (accuracies in percent) and, per experiment, its results and figures, on the
    data `data_verdict` describes."""
    judgement = judge(scale, planned, data)
    out.mkdir(parents=True, exist_ok=True)
    all_results = [j.result for j in judgement.judged]
    figures = {}
    for name, (exp, runs) in planned.items():
        if any(RunFiles(r.path).recipe.is_file() for r in runs):
            computed = experiment_results(runs)
            write_results(exp, scale, runs, out / name, f"budgetnet study --scale {scale} --out {out}", computed)
            figures[name] = _published_figure(name, computed, all_results, out / name / "study.png", scale)
    report.write_csv(study_csv_rows(judgement), out / "study.csv")
    atomic.write_text(out / "STUDY.md", study_markdown(judgement, out, planned, figures))
    return out / "STUDY.md"


def _published_figure(name: str, results: ExperimentResults, all_results: list[Result], path: Path,
                      scale: str) -> Path | None:
    """The best-seen test accuracy (the figure judged against the published one) per setting, the study's published
    values marked, for experiments that publish any."""
    published = {res.runs[0].setting.label: res.row.published  # a setting two rows share: its controlled row's
                 for res in sorted(all_results, key=lambda res: res.reading == CONTROLLED)
                 if res.row.experiment == name and res.row.published is not None}
    if not published:
        return None
    return report.plot_accuracy_bars(results.rows, path, f"{name} ({scale} scale): our best-seen test accuracy (the "
                                 "judged figure) vs the study's published (highest) values",
                                 {label: v for label, v in published.items() if label in results.groups},
                                 "best_seen")


# ---- running ------------------------------------------------------------------------------------

def run_study(scale: str = "smoke", out: str | Path | None = None, jobs: int | None = None,
              data_dir: str | Path | None = None, overrides: list[str] = (), dry_run: bool = False
              ) -> tuple[Path, list[PlannedRun]]:
    """Plan all five experiments at `scale`, print the cost plan, train what is not done (finished runs are
    skipped, killed ones resumed) and write STUDY.md. Returns (STUDY.md or the out folder, failed runs)."""
    out = Path(out) if out else Path("runs") / f"study-{scale}"
    for name in EXPERIMENTS:
        get_scale(load_experiment(name), scale)  # an unknown scale fails here, naming the scales
    planned = plan_study(scale, out, overrides)
    runs = distinct_runs(planned)
    jobs = check_jobs(jobs)
    too_small = why_too_small(planned)
    print(f"study, scale {scale}: {len(runs)} distinct runs for {len(load_facts().rows)} rows of the study into {out} "
          f"({jobs} at a time)" + (f"; too small to judge the study's conclusions: {too_small}" if too_small
                                   else ""), file=sys.stderr)
    if dry_run:
        print(cost_plan(runs, jobs), file=sys.stderr)
        return out, []
    check_data(runs, data_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_text(out / "study.yaml", yaml.safe_dump({"scale": scale, "overrides": list(overrides),
                                                          "runs": sorted(r.path.name for r in runs)}, sort_keys=False))
    start = time.perf_counter()
    failed = train_runs(runs, jobs, data_dir)
    print(f"study, scale {scale}: trained in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    dataset = runs[0].recipe.data.dataset
    official = official_copy(dataset, data_dir)
    copy = data_verdict(official, decoded_test_sha256(dataset, data_dir) if official is False else None)
    return write_study(scale, out, planned, copy), failed
