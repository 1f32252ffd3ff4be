"""The run directory's files: metric rows, atomic summaries, and the summary's choice of the best epoch."""
import json

from budgetnet.config import load_recipe
from budgetnet.rundir import RunFiles, append_jsonl, read_metrics, summarize, write_summary


def test_metrics_round_trip_and_a_missing_file_reads_empty(tmp_path):
    files = RunFiles(tmp_path)
    assert read_metrics(tmp_path) == []
    append_jsonl(files.metrics, {"epoch": 1, "test_acc": 0.5})
    append_jsonl(files.metrics, {"epoch": 2, "test_acc": 0.25})
    assert read_metrics(tmp_path) == [{"epoch": 1, "test_acc": 0.5}, {"epoch": 2, "test_acc": 0.25}]


def test_summary_is_replaced_whole_and_leaves_no_temporary_file(tmp_path):
    files = RunFiles(tmp_path)
    write_summary(files, {"status": "running"})
    write_summary(files, {"status": "finished"})
    assert json.loads(files.summary.read_text()) == {"status": "finished"}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_summary_picks_the_best_epoch_on_validation_and_reports_the_last_test_figure():
    recipe = load_recipe("demo", ["epochs=3", "description=three epochs"])
    rows = [{"epoch": 1, "val_acc": 0.4, "test_acc": 0.41, "seconds": 1.0, "images_per_s": 100.0},
            {"epoch": 2, "val_acc": 0.6, "test_acc": 0.58, "seconds": 2.0, "images_per_s": 300.0},
            {"epoch": 3, "val_acc": 0.5, "test_acc": 0.61, "test_loss": 1.5, "seconds": 3.0, "images_per_s": 200.0}]
    s = summarize(recipe, 1234, rows, "finished", device="cpu")
    assert (s["best_by"], s["best_epoch"], s["best_acc"], s["best_test_acc"]) == ("val_acc", 2, 0.6, 0.58)
    assert (s["final_test_acc"], s["final_test_loss"], s["epochs_done"], s["epochs"]) == (0.61, 1.5, 3, 3)
    assert (s["train_seconds"], s["images_per_s"], s["device"]) == (6.0, 200.0, "cpu")
    assert s["description"] == "three epochs" and s["params"] == 1234
