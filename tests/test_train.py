"""The training loop: it learns, writes a run directory, resumes exactly, stops on NaN, loads checkpoints safely."""
import errno
import json
import pickle
import subprocess
from pathlib import Path

import pytest
import torch
from torch import nn

import budgetnet
from budgetnet import atomic
from budgetnet.atomic import DiskFullError
from budgetnet.cli import main
from budgetnet.config import RecipeError, load_recipe
from budgetnet.design.model import ResNet
from budgetnet.design.spec import BudgetError, ModelSpec
from budgetnet.evaluation.evaluate import evaluate_run
from budgetnet.training import checkpoint
from budgetnet.training.checkpoint import CheckpointError
from budgetnet.training.loop import TrainingDiverged, TrainingInterrupted, build_state, check_recipe, train
from budgetnet.training.optim import lr_at_step
from budgetnet.training.rundir import RunFiles
from budgetnet.training.runtime import Dist
from conftest import CLASSES, TINY_MODEL, Crash, crash_after, tiny_recipe


def test_trains_above_chance_and_writes_the_run(tiny_data, tmp_path):
    summary = train(tiny_recipe("epochs=3"), tmp_path / "run", data=tiny_data, progress=False)
    rows = RunFiles(tmp_path / "run").read_metrics()
    assert [r.epoch for r in rows] == [1, 2, 3]
    assert None not in (rows[0].lr, rows[0].train_loss, rows[0].train_acc, rows[0].test_loss, rows[0].test_acc,
                        rows[0].seconds, rows[0].images_per_s)
    assert rows[-1].train_loss < rows[0].train_loss
    assert summary.status == "finished" and summary.final_test_acc > 0.3  # chance is 0.1
    for name in ("recipe.yaml", "summary.json", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (tmp_path / "run" / name).is_file()
    # provenance: class names and the code that wrote them travel with the weights; figures name their machine
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(budgetnet.__file__).parent, capture_output=True,
                            text=True).stdout.strip() or None
    state = checkpoint.load(tmp_path / "run" / "checkpoints" / "best.pt")
    assert (state["classes"], state["budgetnet_version"], state["budgetnet_commit"]) == (
        CLASSES, budgetnet.__version__, commit)
    assert (summary.device, summary.torch, summary.cuda, summary.budgetnet_version,
            summary.budgetnet_commit) == ("cpu", torch.__version__, torch.version.cuda, budgetnet.__version__, commit)
    assert summary.device_name


def test_sync_bn_converts_batchnorm_under_ddp_and_is_refused_on_the_cpu(tiny_data, tmp_path, monkeypatch):
    recipe = tiny_recipe("sync_bn=true")

    def norms(model):
        return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    two_ranks = build_state(recipe, tiny_data, torch.device("cpu"), Dist(0, 2, 0)).model
    assert norms(two_ranks) and all(isinstance(m, nn.SyncBatchNorm) for m in norms(two_ranks))
    one_rank = build_state(recipe, tiny_data, torch.device("cpu"), Dist()).model
    assert len(norms(one_rank)) == len(norms(two_ranks)) and not any(isinstance(m, nn.SyncBatchNorm)
                                                                     for m in norms(one_rank))
    monkeypatch.setattr("budgetnet.training.loop.init_distributed", lambda device: Dist(0, 2, 0))
    with pytest.raises(RecipeError, match="sync_bn=true needs CUDA devices"):
        train(recipe, tmp_path / "run", data=tiny_data, progress=False)
    assert not (tmp_path / "run").exists()


def test_resume_ends_with_the_same_weights_as_an_uninterrupted_run(tiny_data, tmp_path):
    recipe = tiny_recipe("epochs=3", "augment=[{name: crop, padding: 4}, {name: flip}]")
    train(recipe, tmp_path / "full", data=tiny_data, progress=False)
    with pytest.raises(Crash):
        train(recipe, tmp_path / "killed", data=tiny_data, progress=False, on_epoch=crash_after(2))
    assert json.loads((tmp_path / "killed" / "summary.json").read_text())["epochs_done"] == 2
    summary = train(None, tmp_path / "killed", data=tiny_data, progress=False, resume=True)
    assert summary.epochs_done == 3
    full = checkpoint.load(tmp_path / "full" / "checkpoints" / "last.pt")
    resumed = checkpoint.load(tmp_path / "killed" / "checkpoints" / "last.pt")
    for key, value in full["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    full, killed = RunFiles(tmp_path / "full").read_metrics(), RunFiles(tmp_path / "killed").read_metrics()
    assert full[-1].test_acc == killed[-1].test_acc


def test_test_every_records_the_plain_test_accuracy_and_the_best_seen(tiny_data, tmp_path):
    """Every test_every epochs and after the last: the test accuracy without TTA (the study's every-10-epoch
    figure), whatever eval_every and tta say; the summary's best seen is the highest of those, chosen on test."""
    recipe = tiny_recipe("epochs=3", "test_every=2", "eval_every=2", "tta=flip")
    summary = train(recipe, tmp_path / "run", data=tiny_data, progress=False)
    rows = RunFiles(tmp_path / "run").read_metrics()
    assert [(r.plain_test_acc is not None, r.test_acc is not None) for r in rows] == [
        (False, False), (True, True), (True, True)]
    model = ResNet(recipe.model)
    model.load_state_dict(checkpoint.load(tmp_path / "run" / "checkpoints" / "last.pt")["model"])
    model.eval()
    images, labels = tiny_data.test
    with torch.no_grad():
        x = tiny_data.normalize(images.float() / 255)
        plain, flipped = model(x), model(x.flip(-1))
    assert rows[-1].plain_test_acc == pytest.approx((plain.argmax(1) == labels).float().mean().item())
    assert rows[-1].test_acc == pytest.approx(((plain + flipped).argmax(1) == labels).float().mean().item())
    best = max(rows[1:], key=lambda r: r.plain_test_acc)
    assert (summary.best_seen_test_acc, summary.best_seen_test_epoch) == (best.plain_test_acc, best.epoch)
    assert summary.train_seconds == pytest.approx(sum(r.seconds for r in rows))  # training epochs alone


def test_without_tta_the_plain_test_accuracy_is_the_epochs_own_and_off_records_none(tiny_data, tmp_path):
    train(tiny_recipe("epochs=3", "test_every=2"), tmp_path / "on", data=tiny_data, progress=False)
    rows = RunFiles(tmp_path / "on").read_metrics()
    assert [r.plain_test_acc for r in rows] == [None, rows[1].test_acc, rows[2].test_acc]
    summary = train(tiny_recipe("epochs=2"), tmp_path / "off", data=tiny_data, progress=False)
    assert not any("plain_test_acc" in r.to_dict() for r in RunFiles(tmp_path / "off").read_metrics())
    assert (summary.best_seen_test_acc, summary.best_seen_test_epoch) == (None, None)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_data, tmp_path):
    recipe = tiny_recipe("epochs=3")
    with pytest.raises(Crash):
        train(recipe, tmp_path / "run", data=tiny_data, progress=False, on_epoch=crash_after(1))
    before = checkpoint.load(tmp_path / "run" / "checkpoints" / "last.pt")
    ckpt = tmp_path / "run" / "checkpoints" / "last.pt"
    state = torch.load(ckpt, weights_only=True)
    state["optimizer"]["param_groups"][0]["initial_lr"] = float("nan")  # the schedule's base: every lr after it
    # a NaN learning rate poisons the next epoch; its checkpoint must not replace the good one
    torch.save(state, ckpt)
    with pytest.raises(TrainingDiverged, match="last good checkpoint"):
        train(None, tmp_path / "run", data=tiny_data, progress=False, resume=True)
    after = checkpoint.load(ckpt)
    assert after["epoch"] == before["epoch"] == 1
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "diverged"


def test_a_nan_in_the_first_epoch_names_no_checkpoint_that_does_not_exist(tiny_data, tmp_path):
    with pytest.raises(TrainingDiverged) as info:
        train(tiny_recipe("epochs=2", "optimizer.lr=1e30"), tmp_path / "run", data=tiny_data, progress=False)
    assert "no checkpoint (none written yet)" in str(info.value) and "last.pt" not in str(info.value)
    assert f"--resume {tmp_path / 'run'} --set optimizer.lr=" in str(info.value)
    assert not RunFiles(tmp_path / "run").last.exists()


def test_an_interrupt_names_the_run_directory_and_keeps_the_finished_epoch(tiny_data, tmp_path):
    def interrupt(row):
        raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted) as info:
        train(tiny_recipe("epochs=3"), tmp_path / "run", data=tiny_data, progress=False, on_epoch=interrupt)
    files = RunFiles(tmp_path / "run")
    assert str(info.value) == (f"interrupted: the run keeps its last good checkpoint, after epoch 1 ({files.last}); "
                               f"continue with --resume {files.root}")
    summary = json.loads(files.summary.read_text())
    assert (summary["status"], summary["epochs_done"]) == ("interrupted", 1)
    assert checkpoint.load(files.last)["epoch"] == 1


def temporary_of(path, name: str) -> bool:
    """Whether `path` is a temporary file that atomic.replacing writes before it becomes `name`."""
    return isinstance(path, Path) and path.name.startswith(name + ".") and path.name.endswith(atomic.TMP_SUFFIX)


class FullDisk:
    """A file whose writes fill the disk half-way through the data, as a real ENOSPC leaves a partial file."""

    def __init__(self, path, mode):
        self.f = open(path, mode)

    def write(self, data):
        self.f.write(data[: len(data) // 2])
        self.f.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def test_a_full_disk_keeps_the_last_good_checkpoint_and_says_where(tiny_data, tmp_path, monkeypatch):
    files = RunFiles(tmp_path / "run")
    writes = []

    def open_filling_at_epoch_2(path, mode="r", *args, **kwargs):
        if temporary_of(path, "last.pt"):
            writes.append(path)
            if len(writes) == 2:
                return FullDisk(path, mode)
        return open(path, mode, *args, **kwargs)

    monkeypatch.setattr(atomic, "open", open_filling_at_epoch_2, raising=False)
    with pytest.raises(DiskFullError) as info:
        train(tiny_recipe("epochs=3"), files.root, data=tiny_data, progress=False)
    assert str(info.value).startswith(f"no space left on device while writing {files.last}; the partial file was "
                                      f"removed and the run keeps its last good checkpoint, after epoch 1")
    assert not list(files.root.rglob("*.tmp"))
    assert checkpoint.load(files.last)["epoch"] == 1 and [r.epoch for r in files.read_metrics()] == [1]
    summary = json.loads(files.summary.read_text())
    assert (summary["status"], summary["epochs_done"]) == ("disk_full", 1) and "no space left" in summary["error"]
    monkeypatch.undo()
    (files.checkpoints / "best.pt.tmp").write_bytes(b"")  # what a SIGKILL mid-write leaves
    assert train(None, files.root, data=tiny_data, progress=False, resume=True).epochs_done == 3
    assert not list(files.root.rglob("*.tmp"))


def test_the_cli_reports_a_full_disk_in_one_line_with_a_non_usage_exit_code(fake_cifar, tmp_path, monkeypatch,
                                                                            capsys):
    def full_disk(path, mode="r", *args, **kwargs):
        return FullDisk(path, mode) if temporary_of(path, "last.pt") else open(path, mode, *args, **kwargs)

    monkeypatch.setattr(atomic, "open", full_disk, raising=False)
    run = tmp_path / "run"
    code = main(["train", "--recipe", "demo", "--data", str(fake_cifar), "--out", str(run), "--quiet",
                 *[f"--set={o}" for o in (*TINY_MODEL, "epochs=1", "data.train_size=256", "data.test_size=256")]])
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("note: ")]  # the data note
    assert code == 1 and len(err) == 1, err
    assert f"no space left on device while writing {RunFiles(run).last}" in err[0]
    assert not list(run.rglob("*.tmp"))


def test_a_run_changed_with_set_says_so_in_its_description(fake_cifar, tmp_path):
    sets = (*TINY_MODEL, "epochs=1", "data.train_size=256", "data.test_size=256")
    assert main(["train", "--recipe", "demo", "--data", str(fake_cifar), "--out", str(tmp_path / "run"), "--quiet",
                 *[f"--set={o}" for o in sets]]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    demo = load_recipe("demo").description
    assert summary["description"] == f"{demo} Changed with --set: {'; '.join(sets)}."
    assert RunFiles(tmp_path / "run").read_recipe().description == summary["description"]


def test_resume_honours_set_and_records_when_it_took_effect(tiny_data, tmp_path):
    recipe = tiny_recipe("epochs=4")
    files = RunFiles(tmp_path / "run")
    with pytest.raises(Crash):
        train(recipe, files.root, data=tiny_data, progress=False, on_epoch=crash_after(2))
    with pytest.raises(RecipeError, match=r"--resume --set model.channels: a run in progress cannot change its "
                                          "architecture"):
        train(None, files.root, data=tiny_data, progress=False, resume=True, overrides=["model.channels=16"])
    train(None, files.root, data=tiny_data, progress=False, resume=True, overrides=["optimizer.lr=0.01"])
    assert files.read_overrides() == [{"from_epoch": 3, "changes": {"optimizer.lr": {"from": 0.2, "to": 0.01}}}]
    assert "lr: 0.01" in files.recipe.read_text()
    rows, steps = files.read_metrics(), 512 // 64
    for row in rows:  # epochs 1-2 follow the schedule from 0.2, epochs 3-4 the same schedule from 0.01
        base = 0.2 if row.epoch <= 2 else 0.01
        expected = lr_at_step(recipe.schedule, base, row.epoch * steps, 4 * steps, steps)
        assert row.lr == pytest.approx(expected, abs=1e-12)
    assert rows[2].lr > 0
    groups = checkpoint.load(files.last)["optimizer"]["param_groups"]
    assert [g["initial_lr"] for g in groups] == [0.01, 0.01 * recipe.optimizer.norm_lr_scale]


def test_over_budget_fails_before_any_work(tiny_data, tmp_path):
    with pytest.raises(BudgetError, match="largest C_1"):
        train(tiny_recipe("budget=1000"), tmp_path / "run", data=tiny_data, progress=False)
    assert not (tmp_path / "run").exists()


def test_unknown_augmentation_fails_before_any_work(tiny_data, tmp_path):
    with pytest.raises(ValueError, match="flipp"):
        train(tiny_recipe("augment=[{name: flipp}]"), tmp_path / "run", data=tiny_data, progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("override, message", [
    ("epochs=0", "epochs=0 must be > 0"),
    ("epochs=-1", "epochs=-1 must be > 0"),
    ("batch_size=0", "batch_size=0 must be 1 or more"),
    ("batch_size=-5", "batch_size=-5 must be 1 or more"),
    ("eval_batch_size=0", "eval_batch_size=0 must be 1 or more"),
    ("eval_every=0", "eval_every=0 must be 1 or more"),
    ("test_every=-1", "test_every=-1 must be 0 or more"),
    ("tta=foo", "tta='foo' is unknown: use one of none, flip, flip_translate"),
    ("precision=fp8", "precision='fp8' is unknown: use one of auto, fp32, bf16"),
    ("compile_mode=fastest", "compile_mode='fastest' is unknown"),
    ("device=gpu", "device='gpu' is not a device"),
    ("optimizer.name=sgdd", "optimizer.name='sgdd' is unknown"),
    ("label_smoothing=1.5", "label_smoothing=1.5 must be in"),
    ("grad_clip=0", "grad_clip=0.0 must be > 0"),
    ("ema.enabled=true", None),  # valid: the table's control row
    ("ema.decay=1.5", "ema.decay=1.5 must be in (0, 1)"),
    ("ema.decay=0", "ema.decay=0.0 must be in (0, 1)"),
    ("lookahead.k=0", "lookahead.k=0 must be 1 or more"),
    ("lookahead.alpha=0", "lookahead.alpha=0.0 must be in (0, 1]"),
    ("optimizer.lr=-1", "optimizer.lr=-1.0 must be > 0"),
    ("optimizer.lr=0", "optimizer.lr=0.0 must be > 0"),
    ("optimizer.lr=.nan", "optimizer.lr=nan is not a finite number"),
    ("optimizer.lr=.inf", "optimizer.lr=inf is not a finite number"),
    ("optimizer.momentum=2", "optimizer.momentum=2.0 must be in [0, 1)"),
    ("optimizer.momentum=-0.1", "optimizer.momentum=-0.1 must be in [0, 1)"),
    ("optimizer.weight_decay=-1e-4", "optimizer.weight_decay=-0.0001 must be >= 0"),
    ("optimizer.betas=[0.9, 1.0]", "optimizer.betas.1=1.0 must be in [0, 1)"),
    ("optimizer.betas=[0.9]", "optimizer.betas=[0.9] must be two numbers"),
    ("optimizer.norm_weight_decay=-1", "optimizer.norm_weight_decay=-1.0 must be >= 0"),
    ("label_smoothing=.nan", "label_smoothing=nan is not a finite number"),
    ("grad_clip=-1", "grad_clip=-1.0 must be > 0"),
    ("schedule.gamma=0", "schedule.gamma=0.0 must be > 0"),
    ("schedule.eta_min=-1", "schedule.eta_min=-1.0 must be >= 0"),
    ("schedule.warmup_epochs=.nan", "schedule.warmup_epochs=nan is not a finite number"),
    ("schedule.pct_start=1", "schedule.pct_start=1.0 must be in (0, 1)"),
    ("schedule.milestones=[0.5, 2]", "schedule.milestones.1=2.0 must be a fraction of the run"),
    ("augment=[{name: crop, padding: .nan}]", "augment.0.padding=nan is not a finite number"),
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
    with pytest.raises(CheckpointError, match="evil.pt is not a plain checkpoint .*: not loaded") as refused:
        checkpoint.load(path)
    assert "weights_only" not in str(refused.value) and len(str(refused.value).splitlines()) == 1
    assert "pwned" not in capsys.readouterr().out


def test_loading_into_another_architecture_names_the_mismatch():
    weights = ResNet(ModelSpec(blocks=[1, 1], channels=8, pool_size=16)).state_dict()
    with pytest.raises(CheckpointError, match=r"different architecture \(stem.0.weight: \(8, 3, 3, 3\) in the checkpoint, \(12, 3, 3, 3\) in the model"):
        checkpoint.load_weights(ResNet(ModelSpec(blocks=[1, 1], channels=12, pool_size=16)), weights)
    with pytest.raises(CheckpointError, match="missing from the checkpoint: stages.2"):
        checkpoint.load_weights(ResNet(ModelSpec(blocks=[1, 1, 1], channels=8, pool_size=8)), weights)


def test_eval_of_a_run_matches_its_last_epoch(tiny_data, fake_cifar, tmp_path):
    # train on the fake folder's own data so that eval (which reads the folder) sees the same test set
    summary = train(tiny_recipe("epochs=1", "data.train_size=512"), tmp_path / "run", data_dir=fake_cifar,
                    progress=False)
    result = evaluate_run(tmp_path / "run", data_dir=fake_cifar, device="cpu")
    assert result.accuracy == pytest.approx(summary.final_test_acc, abs=1e-6)
    assert result.params == summary.params
    assert sum(map(sum, result.confusion_matrix)) == 10_000
    assert (tmp_path / "run" / "eval.json").is_file() and (tmp_path / "run" / "confusion.png").is_file()
