"""A run directory keeps its history and takes one writer; values are checked before they are kept; NaN is never
a result (issue 20)."""
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from budgetnet.cli import main
from budgetnet.config import RecipeError
from budgetnet.console import predictions_text
from budgetnet.training import checkpoint
from budgetnet.training.loop import TrainingDiverged, train
from budgetnet.training.rundir import MetricRow, RunBusyError, RunFiles, dumps
from conftest import TINY_MODEL, Crash, crash_after, tiny_recipe


@pytest.fixture
def stopped_run(tiny_data, tmp_path):
    """A run of 3 epochs stopped after its first."""
    files = RunFiles(tmp_path / "run")
    with pytest.raises(Crash):
        train(tiny_recipe("epochs=3"), files.root, data=tiny_data, progress=False, on_epoch=crash_after(1))
    return files


def test_a_refused_resume_value_is_not_written_into_the_recipe(stopped_run, tiny_data):
    before = stopped_run.recipe.read_text()
    with pytest.raises(RecipeError, match=r"^optimizer.lr=-1.0 must be > 0$"):
        train(None, stopped_run.root, data=tiny_data, progress=False, resume=True, overrides=["optimizer.lr=-1"])
    assert stopped_run.recipe.read_text() == before
    assert train(None, stopped_run.root, data=tiny_data, progress=False, resume=True).epochs_done == 3


def test_the_recipe_is_replaced_only_once_the_run_continues(stopped_run, tiny_data, monkeypatch):
    before = stopped_run.recipe.read_text()

    def broken(*args, **kwargs):
        raise RuntimeError("the model could not be built")

    monkeypatch.setattr("budgetnet.training.loop.build_state", broken)
    with pytest.raises(RuntimeError, match="could not be built"):
        train(None, stopped_run.root, data=tiny_data, progress=False, resume=True, overrides=["optimizer.lr=0.05"])
    assert stopped_run.recipe.read_text() == before and not stopped_run.overrides.exists()
    monkeypatch.undo()
    train(None, stopped_run.root, data=tiny_data, progress=False, resume=True, overrides=["optimizer.lr=0.05"])
    assert "lr: 0.05" in stopped_run.recipe.read_text()


def test_a_second_writer_is_refused_naming_the_pid_holding_the_run(tiny_data, tmp_path):
    files = RunFiles(tmp_path / "run")
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from budgetnet.training.rundir import RunFiles
        with RunFiles(Path({str(files.root)!r})).locked():
            print("locked", flush=True)
            time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunBusyError, match=rf"being written by another budgetnet process \(PID {holder.pid}\)"):
            train(tiny_recipe("epochs=1"), files.root, data=tiny_data, progress=False)
        assert not files.metrics.exists() and not files.recipe.exists()
    finally:
        holder.kill()  # a killed holder leaves nothing stuck: the kernel drops its lock
        holder.wait()
    assert train(tiny_recipe("epochs=1"), files.root, data=tiny_data, progress=False).status == "finished"
    assert [r.epoch for r in files.read_metrics()] == [1]


def test_the_lock_is_released_when_the_run_ends_however_it_ends(stopped_run, tmp_path):
    with stopped_run.locked():  # the stopped run released it
        with pytest.raises(RunBusyError, match=f"PID {os.getpid()}"):
            with stopped_run.locked():
                pass
    with stopped_run.locked():
        pass


def test_resume_refuses_metric_rows_whose_checkpoints_are_gone(stopped_run, tiny_data):
    for ckpt in stopped_run.checkpoints.iterdir():
        ckpt.unlink()
    rows = stopped_run.metrics.read_text()
    with pytest.raises(RecipeError, match=r"metrics.jsonl holds 1 epoch rows but .*last.pt is gone"):
        train(None, stopped_run.root, data=tiny_data, progress=False, resume=True)
    assert stopped_run.metrics.read_text() == rows


def test_a_new_run_refuses_a_folder_holding_metrics_without_a_checkpoint(tiny_data, tmp_path):
    files = RunFiles(tmp_path / "run")
    files.root.mkdir()
    files.append_metrics(MetricRow.from_dict({"epoch": 1, "test_acc": 0.5}))
    with pytest.raises(RecipeError, match=r"holds metrics.jsonl \(1 epoch rows\) but no checkpoint"):
        train(tiny_recipe("epochs=1"), files.root, data=tiny_data, progress=False)
    rows = [r.to_dict() for r in files.read_metrics()]
    assert rows == [{"epoch": 1, "test_acc": 0.5}] and not files.checkpoints.exists()


def test_a_broken_recipe_yaml_read_by_resume_is_one_line(stopped_run, capsys):
    stopped_run.recipe.write_text("epochs: 3\noptimizer: {lr: 0.1\n")
    assert main(["train", "--resume", str(stopped_run.root)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "recipe.yaml is not valid YAML" in err and "line" in err, err


@pytest.mark.parametrize("text", ["", "# nothing set\n", "{}\n"])
def test_an_empty_recipe_file_is_refused(tmp_path, capsys, text):
    (tmp_path / "empty.yaml").write_text(text)
    assert main(["train", "--recipe", str(tmp_path / "empty.yaml"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "empty.yaml is empty: a recipe file must set something" in err, err
    assert not (tmp_path / "r").exists()


def test_a_nan_evaluation_is_a_divergence_and_the_json_stays_standard(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setattr("budgetnet.training.loop.evaluate_split", lambda *args, **kwargs: (math.nan, 0.1))
    files = RunFiles(tmp_path / "run")
    with pytest.raises(TrainingDiverged, match="epoch 1: the test loss is nan"):
        train(tiny_recipe("epochs=1"), files.root, data=tiny_data, progress=False)
    text = files.summary.read_text()
    summary = json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in summary.json"))
    assert summary["status"] == "diverged" and "test loss is nan" in summary["error"]
    assert not files.last.exists() and files.read_metrics() == []


def test_json_files_write_null_for_non_finite_numbers(tmp_path):
    files = RunFiles(tmp_path)
    files.append_metrics(MetricRow.from_dict({"epoch": 1, "test_loss": math.nan, "test_acc": math.inf,
                                              "x": [-math.inf]}))
    assert files.metrics.read_text() == '{"epoch": 1, "test_loss": null, "test_acc": null, "x": [null]}\n'
    assert dumps({"a": 1.5}) == '{"a": 1.5}'


@pytest.fixture
def nan_run(tmp_path):
    """A run directory whose checkpoint holds NaN weights (what a diverged run's weights are)."""
    from budgetnet.config import load_recipe
    from budgetnet.design.model import ResNet

    from conftest import CLASSES

    recipe = load_recipe("demo", TINY_MODEL)
    weights = ResNet(recipe.model).state_dict()
    weights = {k: v.fill_(math.nan) if v.is_floating_point() else v for k, v in weights.items()}
    checkpoint.save({"model": weights, "epoch": 1, "recipe": recipe.to_dict(), "classes": CLASSES},
                    tmp_path / "run" / "checkpoints" / "best.pt")
    return tmp_path / "run"


def test_export_treats_nan_logits_as_a_mismatch(nan_run, tmp_path, capsys):
    assert main(["export", str(nan_run), "--format", "standalone", "--out", str(tmp_path / "x")]) == 1
    out, err = capsys.readouterr()
    assert "logits match" not in out and "nan" in err and len(err.splitlines()) == 1, (out, err)


def test_predict_never_prints_nan_percent(nan_run, tmp_path, capsys):
    from PIL import Image

    Image.new("RGB", (32, 32), (200, 10, 10)).save(tmp_path / "red.png")
    assert main(["predict", str(nan_run), str(tmp_path / "red.png")]) == 1
    out, err = capsys.readouterr()
    assert "nan" not in out and "not finite" in err and len(err.splitlines()) == 1, (out, err)
    with pytest.raises(ValueError, match="not finite"):
        predictions_text([{"file": "a.png", "top_k": [{"label": "ship", "probability": math.nan}]}])


def test_eval_never_prints_loss_nan(nan_run, fake_cifar, capsys):
    assert main(["eval", str(nan_run), "--data", str(fake_cifar)]) == 1
    out, err = capsys.readouterr()
    err = "\n".join(line for line in err.splitlines() if not line.startswith("note: "))  # the fake data's note
    assert "nan" not in out and "not finite" in err and len(err.splitlines()) == 1, (out, err)
    assert not (nan_run / "eval.json").exists()


FAKE_TRAIN = """
import os, signal, sys, time
from pathlib import Path
run = Path(sys.argv[sys.argv.index("--resume") + 1])
def stop(signum, frame):
    (run / "stopped").write_text(str(signum))
    sys.exit(128 + signum)
signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
(run / "pid").write_text(str(os.getpid()))
time.sleep(60)
"""


def test_a_stopped_experiment_stops_its_child_trainings(tmp_path):
    """SIGTERM to `budgetnet experiment` (as to `study`, which trains through the same code) reaches its child
    train processes, and it exits only once they stopped: no orphan goes on writing the run."""
    (tmp_path / "fake_train.py").write_text(FAKE_TRAIN)
    script = textwrap.dedent(f"""
        import subprocess, sys
        from pathlib import Path
        from budgetnet.workflows.experiment import runner as experiment
        from budgetnet.config import load_recipe
        real_run = subprocess.Popen
        def fake(cmd, **kwargs):  # the child is a stand-in for `budgetnet train`, which takes minutes
            return real_run([sys.executable, {str(tmp_path / 'fake_train.py')!r}, *cmd[3:]], **kwargs)
        experiment.subprocess.Popen = fake
        class Run:
            name, status, path = "r", "new", Path({str(tmp_path / 'r')!r})
            recipe = load_recipe("demo")
        from budgetnet.cli import _train_grid
        sys.exit(_train_grid(lambda: (Path("."), experiment.train_runs([Run()], jobs=1)), True, str))
        """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    parent = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE, text=True)
    pid_file = tmp_path / "r" / "pid"
    deadline = time.monotonic() + 60
    while not pid_file.is_file() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.2)
    child = int(pid_file.read_text())
    try:
        parent.terminate()
        _, err = parent.communicate(timeout=60)
        assert parent.returncode == 128 + signal.SIGTERM, err
        assert (tmp_path / "r" / "stopped").read_text() == str(int(signal.SIGTERM)), err  # forwarded
        with pytest.raises(ProcessLookupError):  # and waited for: the child has ended
            os.kill(child, 0)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
