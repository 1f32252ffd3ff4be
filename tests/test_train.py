"""The training loop: it learns, writes a run directory, resumes exactly, stops on NaN, loads checkpoints safely."""
import json
import pickle

import pytest
import torch

from budgetnet import checkpoint
from budgetnet.checkpoint import CheckpointError
from budgetnet.config import RecipeError
from budgetnet.evaluate import evaluate_run
from budgetnet.model import build_model
from budgetnet.spec import BudgetError, ModelSpec
from budgetnet.rundir import read_metrics
from budgetnet.train import TrainingDiverged, check_recipe, train
from conftest import tiny_recipe


def test_trains_above_chance_and_writes_the_run(tiny_data, tmp_path):
    summary = train(tiny_recipe("epochs=3"), tmp_path / "run", data=tiny_data, progress=False)
    rows = read_metrics(tmp_path / "run")
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert {"lr", "train_loss", "train_acc", "test_loss", "test_acc", "seconds", "images_per_s"} <= set(rows[0])
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert summary["status"] == "finished" and summary["final_test_acc"] > 0.3  # chance is 0.1
    for name in ("recipe.yaml", "summary.json", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (tmp_path / "run" / name).is_file()


class Crash(Exception):
    pass


def crash_after(epoch):
    def on_epoch(row):
        if row["epoch"] == epoch:
            raise Crash

    return on_epoch


def test_resume_ends_with_the_same_weights_as_an_uninterrupted_run(tiny_data, tmp_path):
    recipe = tiny_recipe("epochs=3", "augment=[{name: crop, padding: 4}, {name: flip}]")
    train(recipe, tmp_path / "full", data=tiny_data, progress=False)
    with pytest.raises(Crash):
        train(recipe, tmp_path / "killed", data=tiny_data, progress=False, on_epoch=crash_after(2))
    assert json.loads((tmp_path / "killed" / "summary.json").read_text())["epochs_done"] == 2
    summary = train(None, tmp_path / "killed", data=tiny_data, progress=False, resume=True)
    assert summary["epochs_done"] == 3
    full = checkpoint.load(tmp_path / "full" / "checkpoints" / "last.pt")
    resumed = checkpoint.load(tmp_path / "killed" / "checkpoints" / "last.pt")
    for key, value in full["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    assert read_metrics(tmp_path / "full")[-1]["test_acc"] == read_metrics(tmp_path / "killed")[-1]["test_acc"]


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_data, tmp_path):
    recipe = tiny_recipe("epochs=3")
    with pytest.raises(Crash):
        train(recipe, tmp_path / "run", data=tiny_data, progress=False, on_epoch=crash_after(1))
    before = checkpoint.load(tmp_path / "run" / "checkpoints" / "last.pt")
    ckpt = tmp_path / "run" / "checkpoints" / "last.pt"
    state = torch.load(ckpt, weights_only=True)
    state["optimizer"]["param_groups"][0]["lr"] = float("nan")
    # a NaN learning rate poisons the next epoch; its checkpoint must not replace the good one
    torch.save(state, ckpt)
    with pytest.raises(TrainingDiverged, match="last good checkpoint"):
        train(None, tmp_path / "run", data=tiny_data, progress=False, resume=True)
    after = checkpoint.load(ckpt)
    assert after["epoch"] == before["epoch"] == 1
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "diverged"


def test_over_budget_fails_before_any_work(tiny_data, tmp_path):
    with pytest.raises(BudgetError, match="largest C_1"):
        train(tiny_recipe("budget=1000"), tmp_path / "run", data=tiny_data, progress=False)
    assert not (tmp_path / "run").exists()


def test_unknown_augmentation_fails_before_any_work(tiny_data, tmp_path):
    with pytest.raises(ValueError, match="flipp"):
        train(tiny_recipe("augment=[{name: flipp}]"), tmp_path / "run", data=tiny_data, progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("override, message", [
    ("epochs=0", "epochs=0 must be 1 or more"),
    ("epochs=-1", "epochs=-1 must be 1 or more"),
    ("batch_size=0", "batch_size=0 must be 1 or more"),
    ("batch_size=-5", "batch_size=-5 must be 1 or more"),
    ("eval_batch_size=0", "eval_batch_size=0 must be 1 or more"),
    ("eval_every=0", "eval_every=0 must be 1 or more"),
    ("tta=foo", "tta='foo' is unknown: use one of none, flip, flip_translate"),
    ("precision=fp8", "precision='fp8' is unknown: use one of auto, fp32, bf16"),
    ("compile_mode=fastest", "compile_mode='fastest' is unknown"),
    ("device=gpu", "device='gpu' is not a device"),
    ("optimizer.name=sgdd", "optimizer.name='sgdd' is unknown"),
    ("label_smoothing=1.5", "label_smoothing=1.5 must be in"),
    ("grad_clip=0", "grad_clip=0.0 must be > 0"),
    ("ema.enabled=true", None),  # valid: the table's control row
    ("ema.decay=1.5", "ema.decay must be in"),
    ("lookahead.k=0", "lookahead.k must be >= 1"),
    ("schedule.name=cosin", "schedule.name='cosin' is unknown"),
    ("data.dataset=cifar100", "data.dataset=cifar100 has 100 classes but model.num_classes=10: "
                              "add --set model.num_classes=100"),
    ("data.dataset=mnist", "data.dataset='mnist' is unknown"),
    ("data.val_size=50000", "data.val_size=50000 must be between 0 and 49999"),
    ("data.test_size=0", "data.test_size=0 must be between 1 and 10000"),
])
def test_bad_recipe_values_fail_in_one_line_before_any_work(override, message, tiny_data, tmp_path):
    recipe = tiny_recipe("epochs=1", override)
    if message is None:
        assert check_recipe(recipe) == recipe.model.count_params()
        return
    with pytest.raises((ValueError, RuntimeError)) as info:
        train(recipe, tmp_path / "run", data=tiny_data, progress=False)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()


def test_an_existing_run_is_not_overwritten(tiny_data, tmp_path):
    train(tiny_recipe("epochs=1"), tmp_path / "run", data=tiny_data, progress=False)
    with pytest.raises(RecipeError, match="already holds a run: continue it with --resume"):
        train(tiny_recipe("epochs=1"), tmp_path / "run", data=tiny_data, progress=False)


class Exploit:
    def __reduce__(self):
        return (print, ("pwned",))


def test_checkpoints_never_run_code(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"format": checkpoint.FORMAT, "model": Exploit()}, f, protocol=2)
    with pytest.raises(CheckpointError, match="not a loadable budgetnet checkpoint"):
        checkpoint.load(path)
    assert "pwned" not in capsys.readouterr().out


def test_loading_into_another_architecture_names_the_mismatch():
    weights = build_model(ModelSpec(blocks=[1, 1], channels=8, pool_size=16)).state_dict()
    with pytest.raises(CheckpointError, match=r"different architecture \(stem.0.weight: \(8, 3, 3, 3\) in the checkpoint, \(12, 3, 3, 3\) in the model"):
        checkpoint.load_weights(build_model(ModelSpec(blocks=[1, 1], channels=12, pool_size=16)), weights)
    with pytest.raises(CheckpointError, match="missing from the checkpoint: stages.2"):
        checkpoint.load_weights(build_model(ModelSpec(blocks=[1, 1, 1], channels=8, pool_size=8)), weights)


def test_eval_of_a_run_matches_its_last_epoch(tiny_data, fake_cifar, tmp_path):
    # train on the fake folder's own data so that eval (which reads the folder) sees the same test set
    summary = train(tiny_recipe("epochs=1", "data.train_size=512"), tmp_path / "run", data_dir=fake_cifar,
                    progress=False)
    result = evaluate_run(tmp_path / "run", data_dir=fake_cifar, device="cpu")
    assert result["accuracy"] == pytest.approx(summary["final_test_acc"], abs=1e-6)
    assert result["params"] == summary["params"]
    assert sum(map(sum, result["confusion_matrix"])) == 10_000
    assert (tmp_path / "run" / "eval.json").is_file() and (tmp_path / "run" / "confusion.png").is_file()
