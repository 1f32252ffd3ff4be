"""The run files as typed records (RunSummary, MetricRow, EvalRecord, CheckpointMeta) and a run directory as one
(RunRecord): an old run's files read and written back byte-identical, and a new run's files round-trip through
from_dict and to_dict unchanged."""
import json
import shutil
from pathlib import Path

from budgetnet.config import load_recipe
from budgetnet.training.loop import train
from budgetnet.training import checkpoint
from budgetnet.training.checkpoint import CheckpointMeta
from budgetnet.training.rundir import EvalRecord, MetricRow, RunFiles, RunSummary, dumps, summarize
from conftest import tiny_recipe

OLD_RUN = Path(__file__).parent / "data" / "old_run"
# the keys a run writes today, in their order (`error` only when the run stopped on one)
TODAYS_KEYS = ["status", "params", "epochs", "epochs_done", "final_test_acc", "final_test_loss", "best_by",
               "best_epoch", "best_acc", "best_test_acc", "best_seen_test_acc", "best_seen_test_epoch", "train_seconds",
               "images_per_s", "gflop_per_image", "train_images", "train_pflop", "description", "device",
               "device_name", "torch", "cuda", "budgetnet_version", "budgetnet_commit"]


def test_an_old_run_reads_as_typed_records_and_writes_back_byte_identical(tmp_path):
    """A summary.json from before best_seen_*, the compute record and device_name, holding a key this budgetnet
    does not know: the missing fields are None, the unknown key is kept, and writing it back changes no byte."""
    run = tmp_path / "old_run"
    shutil.copytree(OLD_RUN, run)
    files = RunFiles(run)
    record = files.read_run()
    summary = record.summary
    assert isinstance(summary, RunSummary) and record.path == run and record.status == "finished"
    assert (record.recipe.epochs, record.recipe.model.channels, [r.epoch for r in record.metrics]) == (2, 8, [1, 2])
    assert (summary.epochs_done, summary.final_test_acc, summary.best_epoch, summary.device) == (2, 0.32, 2, "cpu")
    assert (summary.best_seen_test_acc, summary.train_pflop, summary.device_name, summary.error) == (None,) * 4
    assert summary.extra == {"host": "lab-3"}
    original = files.summary.read_bytes()
    files.write_summary(summary)
    assert files.summary.read_bytes() == original
    assert files.read_summary() == summary


def test_a_new_runs_summary_round_trips_byte_identical(tmp_path, tiny_data):
    """What a run writes today: every key of TODAYS_KEYS in that order, none of them unknown, and the same bytes
    through from_dict and to_dict, and from the summary train returns."""
    files = RunFiles(tmp_path / "run")
    returned = train(tiny_recipe("epochs=1"), files.root, data=tiny_data, progress=False)
    written = files.summary.read_bytes()
    summary = RunSummary.from_dict(json.loads(written))
    assert list(json.loads(written)) == TODAYS_KEYS and summary.extra == {}
    assert dumps(summary.to_dict(), indent=2).encode() == written
    assert dumps(returned.to_dict(), indent=2).encode() == written
    assert files.read_run().summary == summary == returned


def test_a_summary_holds_an_error_only_when_there_is_one():
    recipe = load_recipe("demo", ["epochs=3"])
    rows = [MetricRow.from_dict({"epoch": 1, "test_acc": 0.3, "seconds": 1.0, "images_per_s": 10.0})]
    assert "error" not in summarize(recipe, 10, rows, "running", device="cpu").to_dict()
    stopped = summarize(recipe, 10, rows, "diverged", device="cpu", error="epoch 2: the train loss is nan").to_dict()
    assert list(stopped)[-1] == "error" and stopped["error"] == "epoch 2: the train loss is nan"


def test_a_run_directory_without_a_summary_reads_none(tmp_path):
    files = RunFiles(tmp_path)
    files.write_recipe(tiny_recipe())
    record = files.read_run()
    assert (files.read_summary(), record.summary, record.status) == (None, None, "not started")


def test_an_old_runs_metric_rows_and_eval_json_read_as_records_and_write_back_byte_identical(tmp_path):
    """Rows in an older key order, without val_* or plain_test_acc; an eval.json from before the corruption
    results, holding a key this budgetnet does not know."""
    run = tmp_path / "old_run"
    shutil.copytree(OLD_RUN, run)
    files = RunFiles(run)
    rows, evaluation = files.read_metrics(), files.read_eval()
    assert all(isinstance(r, MetricRow) for r in rows) and isinstance(evaluation, EvalRecord)
    assert [(r.epoch, r.test_acc, r.val_acc, r.plain_test_acc, r.extra) for r in rows] == [
        (1, 0.25, None, None, {}), (2, 0.32, None, None, {})]
    assert (evaluation.accuracy, evaluation.checkpoint_epoch, evaluation.ece, evaluation.per_corruption) == (
        0.32, 2, 0.051, None)
    assert evaluation.extra == {"device": "cpu"}
    original_rows, original_eval = files.metrics.read_bytes(), files.eval.read_bytes()
    files.write_metrics(rows)
    files.write_eval(evaluation)
    assert (files.metrics.read_bytes(), files.eval.read_bytes()) == (original_rows, original_eval)


def test_a_metric_row_keeps_unknown_keys_and_writes_todays_in_order():
    row = MetricRow.from_dict({"epoch": 3, "test_acc": 0.5, "lr": 0.1, "note": "x"})
    assert (row.epoch, row.test_acc, row.train_loss, row.extra) == (3, 0.5, None, {"note": "x"})
    assert list(row.to_dict()) == ["epoch", "test_acc", "lr", "note"]
    fresh = MetricRow(epoch=1, lr=0.1, train_loss=2.0, train_acc=0.2, seconds=1.0, images_per_s=5.0, val_acc=0.3)
    assert list(fresh.to_dict()) == ["epoch", "lr", "train_loss", "train_acc", "seconds", "images_per_s", "val_acc"]


def test_a_new_runs_rows_eval_and_checkpoint_round_trip(tmp_path, tiny_data, fake_cifar):
    """Every metric row a run writes today reads back and writes the same bytes; its checkpoint holds, besides
    tensors and state dicts, exactly CheckpointMeta's fields (with its metric row); its eval.json round-trips."""
    from budgetnet.evaluation.evaluate import evaluate_run

    files = RunFiles(tmp_path / "run")
    train(tiny_recipe("epochs=2", "test_every=1"), files.root, data=tiny_data, progress=False)
    written = files.metrics.read_bytes()
    rows = files.read_metrics()
    assert all(r.extra == {} and r.plain_test_acc is not None for r in rows)
    assert "".join(dumps(r.to_dict()) + "\n" for r in rows).encode() == written
    state = checkpoint.load(files.last)
    meta = CheckpointMeta.of(state)
    state_dicts = {"model", "optimizer", "scheduler", "train_model", "lookahead"}
    assert set(state) - state_dicts <= {f for f in CheckpointMeta.__dataclass_fields__}
    assert (meta.epoch, meta.metrics, meta.format) == (2, rows[-1], checkpoint.FORMAT)
    result = evaluate_run(files.root, fake_cifar, "cpu")
    assert files.read_eval() == result and result.checkpoint_epoch == 2
    assert dumps(result.to_dict(), indent=2).encode() == files.eval.read_bytes()
