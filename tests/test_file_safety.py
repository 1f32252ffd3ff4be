"""Trust nothing a file says, lose nothing to a full disk: run directories outside a search's --out, symbolic links
in a run directory, checkpoints whose recipe does not fit their tensors, a disk that fills between a checkpoint and
its metric row, damaged metric and summary files, and exports and figures on a full disk."""
import errno
import json
from pathlib import Path

import optuna
import pytest
import torch
from matplotlib.figure import Figure

from budgetnet import atomic, plots
from budgetnet.atomic import DiskFullError
from budgetnet.cli import main
from budgetnet.config import load_recipe
from budgetnet.deploy.export import export_run
from budgetnet.design.model import ResNet
from budgetnet.training import checkpoint
from budgetnet.training.checkpoint import CheckpointError, load_model
from budgetnet.training.loop import train
from budgetnet.training.rundir import DamagedFileError, EvalRecord, LinkedRunError, MetricRow, RunFiles
from budgetnet.workflows.report import report
from budgetnet.workflows.search.storage import TrialAttrs
from budgetnet.workflows.search.errors import RunDirRefused
from budgetnet.workflows.search.objective import run_path
from budgetnet.workflows.search.space import load_space
from budgetnet.workflows.search.worker import run_search
from conftest import CLASSES, TINY_MODEL, tiny_recipe


def full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


# ---- item 4: where a file says to write ------------------------------------------------------------------------

@pytest.mark.parametrize("run_dir", ["/tmp/elsewhere", "../outside", "trials/../../outside", "link/run", ".", 7])
def test_a_run_directory_outside_out_is_refused(tmp_path, run_dir):
    out = tmp_path / "out"
    out.mkdir()
    (out / "link").symlink_to(tmp_path)  # a link inside --out that leads out of it
    with pytest.raises(RunDirRefused, match="not inside --out"):
        run_path(out, run_dir)
    assert run_path(out, "trials/3") == out / "trials" / "3"


def test_a_search_worker_fails_a_queued_trial_recorded_outside_out_and_writes_nothing_there(tmp_path, tiny_data,
                                                                                              capsys):
    space_file = tmp_path / "tiny.yaml"
    space_file.write_text(json.dumps({"base": "demo", "params": {
        "epochs": 1, "device": "cpu", "model.channels": 8, "data.val_size": 200,
        "optimizer.lr": {"low": 0.05, "high": 0.2, "log": True}}}))
    out, victim = tmp_path / "out", tmp_path / "victim"
    out.mkdir()
    study = optuna.create_study(storage=f"sqlite:///{out / 'search.db'}", study_name="tiny", direction="maximize")
    study.enqueue_trial({"optimizer.lr": 0.1}, user_attrs={"run_dir": "../victim"})
    run_search(load_space(str(space_file)), out, trials=1, data=tiny_data, device="cpu")
    trial = optuna.load_study(study_name="tiny", storage=f"sqlite:///{out / 'search.db'}").trials[0]
    assert trial.state == optuna.trial.TrialState.FAIL and "not inside --out" in TrialAttrs.of(trial).failed
    assert not victim.exists()
    assert "trial 0: failed: the study records run directory '../victim'" in capsys.readouterr().err


def test_a_lock_linked_to_another_file_is_refused_and_that_file_is_untouched(tmp_path):
    files, target = RunFiles(tmp_path / "run"), tmp_path / "precious.txt"
    target.write_text("keep me")
    files.root.mkdir()
    files.lock.symlink_to(target)
    with pytest.raises(LinkedRunError, match=r"\.lock is a symbolic link"):
        with files.locked():
            pass
    assert target.read_text() == "keep me"


def test_the_training_log_is_appended_without_following_a_link(tmp_path):
    """The experiment runner's train.log: a link planted there (after the directory's check) is refused, and its
    target is untouched; a plain log is appended to."""
    files, target = RunFiles(tmp_path / "run"), tmp_path / "precious.txt"
    target.write_text("keep me")
    files.root.mkdir()
    files.train_log.symlink_to(target)
    with pytest.raises(LinkedRunError, match=r"train\.log is a symbolic link"):
        files.open_log()
    assert target.read_text() == "keep me"
    files.train_log.unlink()
    for line in ("one\n", "two\n"):
        with files.open_log() as log:
            log.write(line)
    assert files.train_log.read_text() == "one\ntwo\n"


@pytest.mark.parametrize("name", ["eval.json", "summary.json", "metrics.jsonl", "checkpoints"])
def test_a_run_directory_whose_files_are_links_is_refused_before_training(tmp_path, tiny_data, name):
    files, target = RunFiles(tmp_path / "run"), tmp_path / "precious"
    target.mkdir() if name == "checkpoints" else target.write_text("keep me")
    files.root.mkdir()
    (files.root / name).symlink_to(target)
    with pytest.raises(LinkedRunError, match=f"{name} is a symbolic link"):
        train(tiny_recipe("epochs=1"), files.root, data=tiny_data, progress=False)
    assert (list(target.iterdir()) == []) if name == "checkpoints" else target.read_text() == "keep me"


def test_replacing_a_file_never_writes_through_a_link_left_at_an_old_temporary_name(tmp_path):
    files, target = RunFiles(tmp_path / "run"), tmp_path / "precious.txt"
    target.write_text("keep me")
    files.root.mkdir()
    (files.root / "eval.json.tmp").symlink_to(target)  # what an adversary plants at the old fixed temporary name
    files.write_eval(EvalRecord(accuracy=0.5))
    assert target.read_text() == "keep me" and not files.eval.is_symlink()
    assert files.read_eval() == EvalRecord(accuracy=0.5)


def write_checkpoint(path: Path, recipe_overrides=(), weights_from=(), **fields) -> Path:
    """A checkpoint holding the weights of the model of `weights_from` under a recipe of `recipe_overrides`."""
    recipe = load_recipe("demo", [*TINY_MODEL, "epochs=1", *recipe_overrides])
    weights = ResNet(load_recipe("demo", [*TINY_MODEL, "epochs=1", *weights_from]).model).state_dict()
    checkpoint.save({"model": weights, "epoch": 1, "recipe": recipe.to_dict(), "classes": CLASSES, **fields}, path)
    return path


@pytest.mark.parametrize("recipe_overrides, weights_from, fields, message", [
    (["model.channels=1500", "budget=10000000000"], [], {}, "different architecture"),  # would take gigabytes
    (["model.channels=1500"], [], {}, "over the budget"),
    (["model.num_classes=100", "data.dataset=cifar10"], ["model.num_classes=100"], {}, "has 10 classes"),
    ([], [], {"classes": CLASSES[:3]}, "class names are not 10 names"),
    ([], [], {"recipe": {"model": {"no_such_key": 1}}}, "unknown recipe key"),
    ([], [], {"recipe": None}, "'recipe' is missing"),
    ([], [], {"model": {"stem.weight": [1, 2]}}, "not a state dict of tensors"),
    ([], [], {"epoch": "one"}, "'epoch' is missing or not of type int"),
])
def test_a_checkpoint_that_does_not_fit_its_recipe_is_refused_before_a_model_is_built(
        tmp_path, monkeypatch, recipe_overrides, weights_from, fields, message):
    path = write_checkpoint(tmp_path / "c.pt", recipe_overrides, weights_from, **fields)
    built = []
    monkeypatch.setattr(checkpoint, "ResNet", lambda spec: built.append(torch.empty(0).device) or ResNet(spec))
    with pytest.raises(CheckpointError, match=message) as info:
        load_model(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    assert all(d.type == "meta" for d in built)  # nothing real was built


def test_a_checkpoint_that_fits_loads_with_weights_only(tmp_path, monkeypatch):
    path = write_checkpoint(tmp_path / "c.pt")
    calls = []
    original = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k.get("weights_only")) or original(*a, **k))
    model, recipe, state = load_model(path)
    assert calls == [True] and recipe.model.channels == 8 and next(model.parameters()).device.type == "cpu"


# ---- item 5: a full disk, a damaged file -----------------------------------------------------------------------

def full_disk_when(monkeypatch, hit):
    """Make a write of budgetnet.atomic find the disk full, half the data written, where `hit(file, data)` holds
    (`file`: the path of a temporary file, or the descriptor of an append)."""
    class Filling:
        def __init__(self, file, mode="r", *args, **kwargs):
            self.file, self.f = file, open(file, mode, *args, **kwargs)

        def write(self, data):
            if hit(self.file, data):
                self.f.write(data[: len(data) // 2])
                self.f.flush()
                full_disk()
            return self.f.write(data)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(atomic, "open", Filling, raising=False)


def temporary_of(file, name: str) -> bool:
    return isinstance(file, Path) and file.name.startswith(name + ".") and file.name.endswith(atomic.TMP_SUFFIX)


def test_a_full_disk_at_best_pt_redoes_the_epoch_and_says_so(tiny_data, tmp_path, monkeypatch):
    files = RunFiles(tmp_path / "run")
    full_disk_when(monkeypatch, lambda file, data: temporary_of(file, "best.pt"))  # epoch 1 always writes best.pt
    with pytest.raises(DiskFullError, match=r"while writing .*best\.pt; the partial file was removed and the run keeps "
                                            r"no checkpoint \(none written yet\); epoch 1 is trained again on --resume"):
        train(tiny_recipe("epochs=3"), files.root, data=tiny_data, progress=False)
    assert not files.last.exists() and files.read_metrics() == []
    monkeypatch.undo()
    train(None, files.root, data=tiny_data, progress=False, resume=True)
    assert [r.epoch for r in files.read_metrics()] == [1, 2, 3]


def test_a_full_disk_at_the_metric_row_keeps_the_checkpoint_and_the_resume_restores_the_row(tiny_data, tmp_path,
                                                                                             monkeypatch, capsys):
    files = RunFiles(tmp_path / "run")
    full_disk_when(monkeypatch, lambda file, data: isinstance(file, int) and b'{"epoch": 2,' in data)
    with pytest.raises(DiskFullError, match=r"after epoch 2 .*; epoch 2's metrics row, not written, is restored"):
        train(tiny_recipe("epochs=3"), files.root, data=tiny_data, progress=False)
    assert checkpoint.load(files.last)["epoch"] == 2 and [r.epoch for r in files.read_metrics()] == [1]
    monkeypatch.undo()
    train(None, files.root, data=tiny_data, progress=False, resume=True)
    assert [r.epoch for r in files.read_metrics()] == [1, 2, 3]
    assert "its metrics row restored from" in capsys.readouterr().err


def test_an_append_on_a_full_disk_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    files = RunFiles(tmp_path)
    files.append_metrics(MetricRow.from_dict({"epoch": 1}))

    full_disk_when(monkeypatch, lambda file, data: isinstance(file, int))
    with pytest.raises(DiskFullError, match="metrics.jsonl"):
        files.append_metrics(MetricRow.from_dict({"epoch": 2, "test_acc": 0.5}))
    assert files.metrics.read_text() == '{"epoch": 1}\n'


def test_a_torn_last_row_is_dropped_with_a_note_once(tmp_path, capsys):
    files = RunFiles(tmp_path)
    files.metrics.write_text('{"epoch": 1}\n{"epoch": 2, "test_a')
    assert [r.to_dict() for r in files.read_metrics()] == [{"epoch": 1}] == [r.to_dict() for r in files.read_metrics()]
    err = capsys.readouterr().err
    assert err.count(f"note: {files.metrics}: line 2 is cut short") == 1


@pytest.mark.parametrize("name, text, where", [
    ("metrics.jsonl", '{"epoch": 1}\ngarbage\n{"epoch": 3}\n', "line 2"),
    ("metrics.jsonl", '{"epoch": 1}\n[1, 2]\n', "line 2"),
    ("metrics.jsonl", '{"epoch": 1}\n{"epoch": 2, "te\n', "line 2"),  # not torn: the line ended
    ("summary.json", '{\n  "status": "finished",\n  "epo', "line 3"),
])
def test_other_damage_is_one_line_naming_the_file_and_line(tmp_path, capsys, name, text, where):
    run = tmp_path / "run"
    files = RunFiles(run)
    run.mkdir()
    files.write_recipe(tiny_recipe())
    (run / name).write_text(text)
    with pytest.raises(DamagedFileError, match=f"{name}, {where}: "):
        (files.read_metrics(), files.read_summary(), files.read_eval())
    assert main(["report", str(run), "--out", str(tmp_path / "report")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{run / name}, {where}" in err[0]


def test_report_without_a_summary_works_it_out_from_the_metrics(tmp_path):
    run = tmp_path / "run"
    files = RunFiles(run)
    run.mkdir()
    recipe = tiny_recipe("epochs=3")
    files.write_recipe(recipe)
    for epoch, acc in ((1, 0.4), (2, 0.5)):
        files.append_metrics(MetricRow(epoch=epoch, lr=0.1, train_loss=1.0, train_acc=0.5, seconds=1.0,
                                       images_per_s=10.0, test_loss=1.0, test_acc=acc))
    loaded = files.read_run()
    assert (loaded.status, loaded.summary.epochs_done, loaded.summary.final_test_acc) == (
        "summary missing", 2, 0.5)
    md = report([loaded], tmp_path / "out").read_text()
    assert "summary missing" in md and "not started" not in md


def test_onnx_export_on_a_full_disk_names_the_file_and_leaves_none(tmp_path, monkeypatch):
    run = tmp_path / "run"
    write_checkpoint(run / "checkpoints" / "best.pt")

    def half_then_full(self, destination, *args, **kwargs):
        Path(destination).write_bytes(b"\x08\x01")  # a partial model, as ENOSPC leaves it
        full_disk()

    monkeypatch.setattr(torch.onnx.ONNXProgram, "save", half_then_full)
    out = tmp_path / "export"
    with pytest.raises(DiskFullError, match=f"no space left on device while writing {out / 'model.onnx'}$"):
        export_run(run, "onnx", out)
    assert list(out.iterdir()) == []


def test_a_figure_or_table_on_a_full_disk_names_the_file_and_leaves_none(tmp_path, monkeypatch):
    def half_then_full(self, fname, *args, **kwargs):
        Path(fname).write_bytes(b"\x89PNG")
        full_disk()

    monkeypatch.setattr(Figure, "savefig", half_then_full)
    fig, ax = plots.subplots()
    with pytest.raises(DiskFullError, match="while writing .*curves.png"):
        plots.save(fig, tmp_path / "curves.png")
    assert list(tmp_path.iterdir()) == []
