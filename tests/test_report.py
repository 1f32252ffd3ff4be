"""Reports of any runs: tables, per-epoch figures, the schedule as training steps it, params vs accuracy."""
import json

import pytest
import yaml

from budgetnet.cli import main
from budgetnet.config import RecipeError, load_recipe
from budgetnet.training.loop import train
from budgetnet.training.rundir import RunFiles
from budgetnet.workflows.report import (find_runs, markdown_table, plot_lr, report, run_labels, schedule_curve,
                                        setting_rows)
from conftest import tiny_recipe

TINY = ["model.blocks=[1, 1]", "model.pool_size=16", "epochs=3"]


def read_run(path):
    """The run directory at `path` as RunFiles reads it."""
    return RunFiles(path).read_run()


def fake_run(path, accs, channels=8, status="finished", seen=None):
    """A run directory as training leaves it, with chosen test accuracies per epoch (no training) and, with `seen`,
    a best test accuracy seen every 10 epochs (test_every 10); without, a run from before test_every."""
    recipe = load_recipe("demo", [*TINY, f"model.channels={channels}", f"test_every={10 if seen else 0}"])
    files = RunFiles(path)
    path.mkdir(parents=True)
    files.recipe.write_text(yaml.safe_dump(recipe.to_dict()))
    rows = [{"epoch": e, "lr": 0.1 / e, "train_loss": 2 - a, "train_acc": a, "test_loss": 2.2 - a, "test_acc": a,
             "seconds": 2.0, "images_per_s": 500.0} for e, a in enumerate(accs, 1)]
    files.metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
    files.summary.write_text(json.dumps({
        "status": status, "params": recipe.model.count_params(), "epochs": 3, "epochs_done": len(accs),
        "final_test_acc": accs[-1], "final_test_loss": 2.2 - accs[-1], "best_test_acc": max(accs),
        "best_acc": max(accs), "train_seconds": 2.0 * len(accs),
        **({"best_seen_test_acc": seen, "best_seen_test_epoch": 3} if seen else {})}))
    return path


def test_report_compares_runs_with_table_and_figures(tmp_path):
    a = fake_run(tmp_path / "narrow", [0.3, 0.4, 0.5], channels=8)
    b = fake_run(tmp_path / "wide", [0.35, 0.5, 0.6], channels=16)
    md = report(find_runs([a, b]), tmp_path / "out").read_text()
    assert "| narrow |" in md and "| wide |" in md and "| 60.00 |" in md and "| 50.00 |" in md
    for name in ("curves", "lr", "params_vs_acc"):
        assert (tmp_path / "out" / f"{name}.png").stat().st_size > 10_000
        assert f"![{name}]({name}.png)" in md


def test_no_params_scatter_when_the_design_is_the_same(tmp_path):
    runs = find_runs([fake_run(tmp_path / "a", [0.3]), fake_run(tmp_path / "b", [0.4])])
    report(runs, tmp_path / "out")
    assert not (tmp_path / "out" / "params_vs_acc.png").exists()


def test_summary_rows_average_seeds_and_count_unfinished(tmp_path):
    runs = [read_run(fake_run(tmp_path / f"s{i}", accs, status=s))
            for i, (accs, s) in enumerate([([0.2, 0.4], "finished"), ([0.2, 0.6], "finished"), ([0.1], "running")])]
    rows = setting_rows({"setting": runs[:2], "partial": runs[2:]})
    assert setting_rows({"mixed": runs})[0]["final_test_acc_pct_mean"] == pytest.approx(50.0)  # the running seed waits
    assert rows[0]["final_test_acc_pct_mean"] == pytest.approx(50.0)  # percent, like the Markdown
    assert rows[0]["final_test_acc_pct_std"] == pytest.approx(14.14, abs=1e-2)
    assert rows[1]["final_test_acc_pct_std"] is None  # no std from one run
    assert (rows[0]["runs"], rows[0]["finished"], rows[1]["finished"], rows[1]["status"]) == (2, 2, 0, "running")
    table = markdown_table(rows)
    assert "| setting | 2/2 | 50.00 ± 14.14 |" in table and "| partial | 0/1 (running) | 10.00 |" in table


def test_the_best_seen_every_10_epochs_stands_beside_the_final_and_old_runs_show_a_dash(tmp_path):
    runs = [read_run(fake_run(tmp_path / f"s{i}", [0.2, acc], seen=acc + 0.1)) for i, acc in enumerate([0.4, 0.6])]
    old = read_run(fake_run(tmp_path / "old", [0.3]))
    rows = setting_rows({"new": runs, "old": [old]})
    assert rows[0]["best_seen_test_acc_pct_mean"] == pytest.approx(60.0) and rows[0]["test_every"] == 10
    assert rows[1]["best_seen_test_acc_pct_mean"] is None and rows[1]["test_every"] == 0
    table = markdown_table(rows)
    assert "| final test acc (%) | best test acc seen every 10 epochs (%) | best test acc (%) |" in table
    assert "| new | 2/2 | 50.00 ± 14.14 | 60.00 ± 14.14 | 50.00 ± 14.14 |" in table
    assert "| old | 1/1 | 30.00 | - | 30.00 |" in table
    md = report(find_runs([tmp_path / "s0", tmp_path / "old"]), tmp_path / "out").read_text()
    assert "chosen on the test set, as the study did" in md
    assert "| s0 | 1/1 | 40.00 | 50.00 | 40.00 |" in md and "| old | 1/1 | 30.00 | - | 30.00 |" in md


def test_experiment_directories_expand_to_their_runs_and_bad_paths_are_named(tmp_path):
    fake_run(tmp_path / "exp" / "runs" / "x-seed0", [0.3])
    fake_run(tmp_path / "exp" / "runs" / "y-seed0", [0.4])
    assert [r.path.name for r in find_runs([tmp_path / "exp"])] == ["x-seed0", "y-seed0"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(RecipeError, match="empty is not a run directory"):
        find_runs([tmp_path / "empty"])
    with pytest.raises(RecipeError, match="no such directory"):
        find_runs([tmp_path / "missing"])


def test_repeated_folder_names_are_told_apart_by_path(tmp_path):
    runs = find_runs([fake_run(tmp_path / "a" / "run", [0.3]), fake_run(tmp_path / "b" / "run", [0.4])])
    assert run_labels(runs) == [str(tmp_path / "a" / "run"), str(tmp_path / "b" / "run")]


@pytest.mark.parametrize("schedule", [["schedule.name=cosine"],
                                      ["schedule.name=warm_restarts", "schedule.T_0=1", "schedule.T_mult=2"]])
def test_schedule_curve_is_the_lr_training_logs(tmp_path, tiny_data, schedule):
    recipe = tiny_recipe("epochs=2", "data.train_size=512", "optimizer.lr=0.1", *schedule)
    train(recipe, tmp_path / "run", data=tiny_data, progress=False)
    epochs, lrs = schedule_curve(recipe)
    curve = dict(zip(epochs, lrs))
    for row in RunFiles(tmp_path / "run").read_metrics():
        assert row.lr == pytest.approx(curve[float(row.epoch)], abs=1e-9)


def test_schedule_curve_of_fast_is_the_lr_its_run_logs(tmp_path, tiny_data):
    """fast's lr is in per-1,024-example units: the curve is torch's lr of the run's first group, stepped by the
    real schedule, not the recipe's number."""
    recipe = load_recipe("fast", ["model.channels=[8, 16, 16]", "epochs=2", "eval_every=1", "batch_size=128",
                                   "precision=fp32", "channels_last=false", "tta=none"])
    train(recipe, tmp_path / "run", data=tiny_data, progress=False)
    epochs, lrs = schedule_curve(recipe)
    assert max(lrs) < recipe.optimizer.lr / 5
    curve = dict(zip(epochs, lrs))
    rows = RunFiles(tmp_path / "run").read_metrics()
    assert len(rows) == 2
    for row in rows:
        assert row.lr == pytest.approx(curve[float(row.epoch)], rel=1e-9)


def test_cli_report(tmp_path, capsys):
    a = fake_run(tmp_path / "a", [0.3])
    assert main(["report", str(a), "--out", str(tmp_path / "out"), "--title", "mine"]) == 0
    assert (tmp_path / "out" / "report.md").read_text().startswith("# mine")
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "is not a run directory" in capsys.readouterr().err


def test_tensorboard_export_holds_every_epoch(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    a = fake_run(tmp_path / "a", [0.3, 0.4, 0.5])
    assert main(["report", str(a), "--out", str(tmp_path / "out"), "--tensorboard", str(tmp_path / "tb")]) == 0
    events = EventAccumulator(str(tmp_path / "tb" / "a"))
    events.Reload()
    assert [(e.step, round(e.value, 4)) for e in events.Scalars("accuracy/test_acc")] == [(1, 0.3), (2, 0.4), (3, 0.5)]
    assert "train/lr" in events.Tags()["scalars"]


def test_equal_schedules_stay_visible_and_say_so(tmp_path, monkeypatch):
    runs = find_runs([fake_run(tmp_path / "adam", [0.3]), fake_run(tmp_path / "radam", [0.4]),
                      fake_run(tmp_path / "other", [0.5], channels=16)])
    runs[2].recipe.schedule.name = "constant"  # a different schedule: drawn plainly
    drawn = {}
    monkeypatch.setattr("budgetnet.plots.save", lambda fig, path: drawn.setdefault("fig", fig) and path)
    plot_lr({"adam": runs[:1], "radam": runs[1:2], "other": runs[2:]}, tmp_path / "lr.png", "t")
    lines = {line.get_label(): line for line in drawn["fig"].axes[0].get_lines() if line.get_linestyle() != "None"}
    labels = list(lines)
    assert labels[1].endswith("the same schedule as adam") and "same schedule" not in labels[0] + labels[2]
    widths = [lines[label].get_linewidth() for label in labels[:3]]
    assert widths[0] > widths[1] and widths[1] == widths[2]  # the first of two equal curves is wide, underneath
    assert lines[labels[1]].get_zorder() > lines[labels[0]].get_zorder()


@pytest.mark.parametrize("figure, widths, label", [("final", [50.0, 60.0], "final test accuracy (%)"),
                                                   ("best_seen", [55.0, 65.0],
                                                    "best test accuracy seen every 10 epochs (%)")])
def test_accuracy_bars_show_the_chosen_figure(tmp_path, monkeypatch, figure, widths, label):
    """The study's figure plots the best seen (the figure judged against the published value), reports the final."""
    from budgetnet.workflows import report as report_module
    a = fake_run(tmp_path / "narrow", [0.3, 0.4, 0.5], channels=8, seen=0.55)
    b = fake_run(tmp_path / "wide", [0.35, 0.5, 0.6], channels=16, seen=0.65)
    rows = setting_rows({"narrow": [read_run(a)], "wide": [read_run(b)]})
    saved = {}
    monkeypatch.setattr(report_module.plots, "save", lambda fig, path: saved.setdefault("fig", fig))
    report_module.plot_accuracy_bars(rows, tmp_path / "acc.png", "t", {"wide": 70.0}, figure)
    ax = saved["fig"].axes[0]
    assert [round(p.get_width(), 6) for p in ax.patches] == widths
    assert ax.get_xlabel() == label
