"""The run directory's files: metric rows, atomic summaries and eval.json, the summary's choice of the best
epoch, old run directories, and recipes compared as recipe.yaml records them."""
import copy
import json
import math
import shutil

import yaml

from budgetnet.config import diff_recipes, load_recipe
from budgetnet.deploy.card import model_card
from budgetnet.evaluation.evaluate import evaluate_run
from budgetnet.training.rundir import EvalRecord, MetricRow, RunFiles, RunSummary, recipe_changes, summarize


def test_metrics_round_trip_and_a_missing_file_reads_empty(tmp_path):
    files = RunFiles(tmp_path)
    assert files.read_metrics() == []
    rows = [MetricRow(epoch=1, lr=0.1, train_loss=2.0, train_acc=0.2, seconds=1.0, images_per_s=10.0, test_acc=0.5),
            MetricRow(epoch=2, lr=0.0, train_loss=1.5, train_acc=0.3, seconds=1.0, images_per_s=10.0, test_acc=0.25)]
    for row in rows:
        files.append_metrics(row)
    assert files.read_metrics() == rows
    assert files.metrics.read_text().splitlines()[0] == ('{"epoch": 1, "lr": 0.1, "train_loss": 2.0, "train_acc": 0.2, '
                                                         '"seconds": 1.0, "images_per_s": 10.0, "test_acc": 0.5}')


def test_summary_is_replaced_whole_and_leaves_no_temporary_file(tmp_path):
    files = RunFiles(tmp_path)
    files.write_summary(RunSummary.from_dict({"status": "running"}))
    files.write_summary(RunSummary.from_dict({"status": "finished"}))
    assert json.loads(files.summary.read_text()) == {"status": "finished"}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_summary_picks_the_best_epoch_on_validation_and_reports_the_last_test_figure():
    recipe = load_recipe("demo", ["epochs=3", "description=three epochs"])
    rows = [MetricRow.from_dict(r) for r in (
        {"epoch": 1, "val_acc": 0.4, "test_acc": 0.41, "seconds": 1.0, "images_per_s": 100.0},
        {"epoch": 2, "val_acc": 0.6, "test_acc": 0.58, "seconds": 2.0, "images_per_s": 300.0},
        {"epoch": 3, "val_acc": 0.5, "test_acc": 0.61, "test_loss": 1.5, "seconds": 3.0, "images_per_s": 200.0})]
    s = summarize(recipe, 1234, rows, "finished", device="cpu")
    assert (s.best_by, s.best_epoch, s.best_acc, s.best_test_acc) == ("val_acc", 2, 0.6, 0.58)
    assert (s.final_test_acc, s.final_test_loss, s.epochs_done, s.epochs) == (0.61, 1.5, 3, 3)
    assert (s.train_seconds, s.images_per_s, s.device) == (6.0, 200.0, "cpu")
    assert s.description == "three epochs" and s.params == 1234


def test_eval_json_is_written_and_read_through_run_files(tmp_path):
    files = RunFiles(tmp_path / "run")
    assert files.read_eval() is None
    files.write_eval(EvalRecord(accuracy=0.5, loss=math.nan))  # creates the folder; standard JSON, replaced whole
    assert files.eval.read_text() == json.dumps({"accuracy": 0.5, "loss": None}, indent=2)
    assert files.read_eval() == EvalRecord(accuracy=0.5)  # a null loss reads as no loss
    assert [p.name for p in files.root.iterdir()] == ["eval.json"]


def test_eval_and_its_readers_find_eval_json_only_where_run_files_puts_it(tmp_path, trained_run, fake_cifar,
                                                                            monkeypatch):
    """`budgetnet eval` writes eval.json, and the card and report read it, through RunFiles.eval alone: moving
    that one path moves every writer and reader."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    monkeypatch.setattr(RunFiles, "eval", property(lambda self: self.root / "moved.json"))
    result = evaluate_run(run, fake_cifar, "cpu")
    assert (run / "moved.json").is_file() and not (run / "eval.json").exists()
    assert f"test accuracy {result.accuracy:.2%}" in model_card(run).read_text()


def test_an_old_run_directory_still_loads(tmp_path):
    """A recipe.yaml written before keys were added reads with their defaults; absent files read empty."""
    files = RunFiles(tmp_path)
    files.recipe.write_text(yaml.safe_dump({"epochs": 3, "model": {"channels": 8}}))
    recipe = files.read_recipe()
    assert (recipe.epochs, recipe.model.channels, recipe.checkpoint_every, recipe.ema.enabled) == (3, 8, None, False)
    assert (files.read_summary(), files.read_metrics(), files.read_overrides(), files.read_eval()) == (
        None, [], [], None)


def test_recipe_changes_compare_recipes_as_recipe_yaml_records_them():
    recipe = load_recipe("demo")
    same = copy.deepcopy(recipe)
    same.optimizer.betas = tuple(same.optimizer.betas)  # reads back from YAML as the list
    assert diff_recipes(recipe.to_dict(), same.to_dict()) and recipe_changes(recipe, same) == {}
    same.optimizer.lr = recipe.optimizer.lr / 2
    assert recipe_changes(recipe, same) == {"optimizer.lr": (recipe.optimizer.lr, recipe.optimizer.lr / 2)}
