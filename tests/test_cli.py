"""The command line end to end on a fake CIFAR-10 folder: params, train, resume, eval, and its errors."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from budgetnet.cli import main
from budgetnet.config import RecipeError, load_recipe
from budgetnet.data.cifar import DataError
from budgetnet.deploy.export import ExportError
from budgetnet.design.spec import BudgetError
from budgetnet.errors import RunFailed, UsageError
from budgetnet.training.checkpoint import CheckpointError
from budgetnet.training.loop import TrainingDiverged
from budgetnet.atomic import DiskFullError
from conftest import CLASSES, TINY_MODEL
from test_robustness_cli import fake_test_split, probabilities

TINY = [f"--set={s}" for s in [*TINY_MODEL, "epochs=1", "batch_size=64", "data.train_size=256",
                                "data.test_size=256"]]


def run_json(capsys, *argv):
    code = main(list(argv))
    return code, json.loads(capsys.readouterr().out)


def test_params_json_and_exit_status(capsys):
    code, out = run_json(capsys, "params", "--recipe", "seed", "--json")
    assert code == 0 and out["params"] == 4_815_940 and out["budget"] == 5_000_000 and out["within_budget"]
    code, out = run_json(capsys, "params", "--set", "model.channels=64", "--json")
    assert code == 1 and out["params"] == 11_173_962 and not out["within_budget"]
    code, out = run_json(capsys, "params", "--set", "model.channels=64", "--budget", "5M", "--fit", "--json")
    assert code == 0 and out["fitted_channels"] == 42 and out["params"] == 4_815_940


def test_params_compute_budget_and_fit_within_both(capsys):
    code, out = run_json(capsys, "params", "--recipe", "seed", "--max-gflops", "1", "--json")
    assert code == 1 and out["params"] == 4_815_940 and out["gflop_per_image"] > 1 and not out["within_budget"]
    code, out = run_json(capsys, "params", "--recipe", "small", "--max-gflops", "0.5", "--fit", "--json")
    assert code == 0 and out["gflop_per_image"] <= 0.5 and out["fitted_channels"] == out["design"]["channels"]
    assert out["fitted_channels"][1] == out["fitted_channels"][2] < 256  # small's widths, scaled together
    assert main(["params", "--recipe", "seed", "--max-gflops", "1.5"]) == 0
    assert "compute 1.4353 GFLOP per image forward+backward; max_gflops 1.5: within" in capsys.readouterr().out


def test_params_table(capsys):
    assert main(["params", "--recipe", "seed"]) == 0
    out = capsys.readouterr().out
    assert "stage 4" in out and "336x4x4" in out and "4,815,940" in out and "within budget" in out


@pytest.mark.parametrize("argv, message", [
    (["params", "--set", "model.kernel_size=2"], "even size"),
    (["params", "--set", "optimizer.lrr=1"], "did you mean 'optimizer.lr'"),
    (["train", "--recipe", "nope"], "recipe 'nope' is neither a file nor a shipped name"),
])
def test_user_errors_exit_2_with_a_message(capsys, argv, message):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_train_over_budget_exits_2_before_touching_data(capsys, tmp_path):
    assert main(["train", "--recipe", "seed", "--set", "model.channels=64", "--out", str(tmp_path / "r"),
                 "--data", str(tmp_path / "nowhere")]) == 2
    assert "over the budget" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_train_resume_eval(capsys, fake_cifar, tmp_path):
    run = tmp_path / "run"
    code, summary = run_json(capsys, "train", *TINY, "--out", str(run), "--data", str(fake_cifar), "--quiet", "--json")
    assert code == 0 and summary["status"] == "finished" and summary["epochs_done"] == 1
    code, summary = run_json(capsys, "train", "--resume", str(run), "--data", str(fake_cifar), "--quiet", "--json")
    assert code == 0 and summary["epochs_done"] == 1  # already finished: nothing more to do
    code, result = run_json(capsys, "eval", str(run), "--data", str(fake_cifar), "--json")
    images, labels = fake_test_split(fake_cifar)  # the checkpoint scored by hand, without budgetnet's data or eval
    probs = probabilities(run, images)
    assert code == 0 and result["accuracy"] == (probs.argmax(1) == labels).mean()
    assert result["loss"] == pytest.approx(-np.log(probs[np.arange(len(labels)), labels]).mean(), rel=1e-5)
    assert result["params"] == summary["params"] and result["images"] == 10_000
    assert set(result["per_class_accuracy"]) == {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                                 "horse", "ship", "truck"}


def test_console_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "budgetnet", "params", "--recipe", "demo", "--json"],
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out)["within_budget"] is True


def test_version(capsys):
    from budgetnet import __version__

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"budgetnet {__version__}"


@pytest.mark.parametrize("budget", ["-5", "0", "lots"])
def test_params_refuses_a_budget_that_is_not_a_positive_count(capsys, budget):
    assert main(["params", f"--budget={budget}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("budgetnet params: error: ") and "positive" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("error, code, word", [
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), 1, "failed"),  # not a usage error
    (OSError(28, "No space left on device"), 1, "failed"),
    (DiskFullError("no space left on device while writing runs/x/checkpoints/last.pt"), 1, "failed"),
    (TrainingDiverged("the loss is nan in epoch 1"), 1, "failed"),
    (ExportError("the onnx export's logits differ from budgetnet's by 1e-2"), 1, "failed"),
    (RunFailed("a stated failure"), 1, "failed"),
    (RecipeError("epochs=0 must be 1 or more"), 2, "error"),
    (BudgetError("5,000,001 parameters are over the budget of 5,000,000"), 2, "error"),
    (UsageError("--top-k 0: give at least 1"), 2, "error"),
    (CheckpointError("runs/x holds no checkpoints/"), 2, "error"),
    (DataError("no cifar-10-batches-py/ in /nowhere"), 2, "error"),
    (FileNotFoundError("no such recipe"), 2, "error"),
])
def test_usage_errors_exit_2_failures_exit_1(capsys, monkeypatch, error, code, word):
    def fail(args):
        raise error
    monkeypatch.setattr("budgetnet.cli.cmd_recipes", fail)
    assert main(["recipes"]) == code
    assert capsys.readouterr().err == f"budgetnet recipes: {word}: {error}\n"


@pytest.mark.parametrize("error", [
    KeyError("bug"),
    RuntimeError("mat1 and mat2 shapes cannot be multiplied (64x512 and 256x10)"),  # what torch raises for a bug
    ValueError("too many values to unpack (expected 2)"),
])
def test_a_bug_keeps_its_traceback(monkeypatch, error):
    def fail(args):
        raise error
    monkeypatch.setattr("budgetnet.cli.cmd_recipes", fail)
    with pytest.raises(type(error)) as raised:
        main(["recipes"])
    assert raised.value is error


@pytest.mark.parametrize("setting, message", [
    ("schedule.name=linear", "schedule.name='linear' is unknown"),
    ("device=cuda:x", "device='cuda:x' is not a device"),
    ("ema.decay=2", "ema.decay=2.0 must be in (0, 1)"),
    ("augment=[{name: flipp}]", "unknown augment policy 'flipp'"),
])
def test_bad_recipe_values_exit_2_in_one_line(capsys, tmp_path, setting, message):
    assert main(["train", "--recipe", "demo", "--set", setting, "--out", str(tmp_path / "r"),
                 "--data", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("budgetnet train: error: ") and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()


class Exploit:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory):
    """Files a hostile but fair user hands to the CLI."""
    import pickle

    from PIL import Image

    from budgetnet.design.model import ResNet
    from budgetnet.training import checkpoint

    root = tmp_path_factory.mktemp("bad")
    recipe = load_recipe("demo", TINY_MODEL)
    checkpoint.save({"model": ResNet(recipe.model).state_dict(), "epoch": 1, "recipe": recipe.to_dict(),
                     "classes": CLASSES}, root / "run" / "checkpoints" / "best.pt")
    (root / "evil").mkdir()
    with open(root / "evil" / "evil.pt", "wb") as f:
        pickle.dump({"format": checkpoint.FORMAT, "model": Exploit()}, f, protocol=2)
    (root / "truncated.pt").write_bytes((root / "run" / "checkpoints" / "best.pt").read_bytes()[:1000])
    torch.save({"format": "budgetnet-checkpoint-9", "budgetnet_version": "9.0.0"}, root / "future.pt")
    Image.new("1", (20_000, 20_000)).save(root / "huge.png")
    (root / "file").write_text("")
    return root


BAD_INPUTS = [  # argv ({root}: the fixture's folder), exit code, the one line's text
    (["params", "--budget", "-5"], 2, "'-5' is not a parameter count: use a positive number"),
    (["params", "--set", "model.channels=0"], 2, "channels"),
    (["train", "--set", "epochs=0", "--out", "{root}/r"], 2, "epochs=0 must be > 0"),
    (["train", "--set", "batch_size=-5", "--out", "{root}/r"], 2, "batch_size=-5 must be 1 or more"),
    (["train", "--set", "eval_batch_size=0", "--out", "{root}/r"], 2, "eval_batch_size=0 must be 1 or more"),
    (["train", "--set", "tta=foo", "--out", "{root}/r"], 2, "tta='foo' is unknown"),
    (["train", "--set", "precision=fp8", "--out", "{root}/r"], 2, "precision='fp8' is unknown"),
    (["train", "--set", "data.dataset=cifar100", "--out", "{root}/r"], 2, "add --set model.num_classes=100"),
    (["train", "--set", "data.dataset=mnist", "--out", "{root}/r"], 2, "data.dataset='mnist' is unknown"),
    (["train", "--set", "data.val_size=50000", "--out", "{root}/r"], 2, "data.val_size=50000 must be between"),
    (["train", "--set", "compile_mode=fast", "--out", "{root}/r"], 2, "compile_mode='fast' is unknown"),
    (["train", "--set", "optimizer.name=lion", "--out", "{root}/r"], 2, "optimizer.name='lion' is unknown"),
    (["train", "--set", "optimizer.units=per_batch", "--out", "{root}/r"], 2, "optimizer.units='per_batch' is"),
    (["train", "--set", "optimizer.units=per_1024", "--set", "optimizer.name=adam", "--out", "{root}/r"], 2,
     "units=per_1024 is airbench's convention"),
    (["train", "--set", "optimizer.name=adam", "--set", "optimizer.decoupled_weight_decay=true", "--out",
      "{root}/r"], 2, "adamw decouples weight decay already"),
    (["train", "--set", "optimizer.name=muon", "--set", "optimizer.muon_ns_steps=0", "--out", "{root}/r"], 2,
     "optimizer.muon_ns_steps=0 must be 1 or more"),
    (["train", "--set", "schedule.name=linear", "--out", "{root}/r"], 2, "schedule.name='linear' is unknown"),
    (["train", "--set", "schedule.start_factor=2", "--out", "{root}/r"], 2, "schedule.start_factor=2.0 must be"),
    (["train", "--set", "model.activation=swish", "--out", "{root}/r"], 2, "model.activation='swish' is unknown"),
    (["train", "--set", "augment=[{{name: flipp}}]", "--out", "{root}/r"], 2, "unknown augment policy 'flipp'"),
    (["train", "--resume", "{root}/file"], 2, "not a budgetnet run directory"),
    (["predict", "{root}/run", "{root}/huge.png"], 2, "huge.png: more than 89,478,485 pixels, too large"),
    (["predict", "{root}/run", "{root}/file"], 2, "file: not a readable image"),
    (["predict", "{root}/run", "{root}/file", "--top-k", "0"], 2, "--top-k 0: give at least 1"),
    (["predict", "{root}/evil/evil.pt", "{root}/huge.png"], 2, "evil.pt is not a plain checkpoint"),
    (["eval", "{root}/evil/evil.pt"], 2, "evil.pt is not a plain checkpoint"),
    (["card", "{root}/evil"], 2, "holds no checkpoints/"),
    (["export", "{root}/truncated.pt", "--format", "onnx", "--out", "{root}/x"], 2, "is not a readable checkpoint"),
    (["export", "{root}/run", "--format", "standalone", "--out", "{root}/file"], 2, "file is a file: give a folder"),
    (["export", "{root}/run", "--format", "standalone", "--out", "{root}/file/sub"], 2, "cannot create this folder"),
    (["eval", "{root}/nowhere"], 2, "nowhere: no such checkpoint"),
    (["eval", "{root}/future.pt"], 2, "future.pt was written by budgetnet 9.0.0 in format budgetnet-checkpoint-9"),
    (["augment-preview", "--policy", "nope", "--out", "{root}/p.png"], 2, "nope"),
]


@pytest.mark.parametrize("argv, code, text", BAD_INPUTS, ids=[" ".join(a[:3]) for a, _, _ in BAD_INPUTS])
def test_bad_input_gets_one_clear_line_and_its_exit_code(bad_inputs, capsys, argv, code, text):
    argv = [a.format(root=bad_inputs) for a in argv]
    assert main(argv) == code
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"budgetnet {argv[0]}: error: ") and text in lines[0], err
    assert "Traceback" not in err and "weights_only" not in err and "pwned" not in out
    assert not (bad_inputs / "r").exists()  # refused before any work: no run directory left behind
