"""Preemption of `budgetnet train` as a real process: SIGKILL mid-epoch then --resume ends bit-identical to an
uninterrupted run; SIGTERM stops cleanly, names the run directory and keeps the finished epoch's checkpoint."""
import json
import os
import signal
import subprocess
import sys

import pytest
import torch
import yaml

from budgetnet.training import checkpoint
from budgetnet.training.rundir import RunFiles

pytestmark = pytest.mark.slow

TINY = {"model": {"blocks": [1, 1], "channels": 8, "pool_size": 16}, "epochs": 3, "batch_size": 64,
        "eval_batch_size": 256, "device": "cpu", "data": {"train_size": 2048, "test_size": 256},
        "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True}, "schedule": {"name": "cosine"},
        "augment": [{"name": "crop", "padding": 4}, {"name": "flip"}, {"name": "cutout", "size": 8}]}
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def start(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "budgetnet", "train", *args], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def wait_for_line(proc: subprocess.Popen, text: str) -> None:
    """Block on the process's output (no polling) until a line contains `text`."""
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if text in line:
            return
    raise AssertionError(f"the process ended (rc {proc.wait()}) before printing {text!r}:\n{''.join(seen)}")


@pytest.fixture(scope="module")
def uninterrupted(fake_cifar, tmp_path_factory):
    root = tmp_path_factory.mktemp("preemption")
    recipe = root / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(TINY))
    out, _ = start("--recipe", str(recipe), "--data", str(fake_cifar), "--out", str(root / "full")).communicate()
    assert "finished" in out, out
    return recipe, checkpoint.load(root / "full" / "checkpoints" / "last.pt")


def assert_same_weights(run, full):
    resumed = checkpoint.load(RunFiles(run).last)
    assert resumed["epoch"] == full["epoch"] == 3
    for key, value in full["model"].items():
        assert torch.equal(value, resumed["model"][key]), key


def test_sigkill_mid_epoch_then_resume_is_bit_identical(uninterrupted, fake_cifar, tmp_path):
    recipe, full = uninterrupted
    run = tmp_path / "killed"
    proc = start("--recipe", str(recipe), "--data", str(fake_cifar), "--out", str(run))
    wait_for_line(proc, "epoch 1/3 |")  # printed after epoch 1's checkpoint and row; epoch 2 starts at once
    proc.kill()
    proc.wait()
    assert [r.epoch for r in RunFiles(run).read_metrics()] == [1]  # killed inside epoch 2
    out, _ = start("--resume", str(run), "--data", str(fake_cifar)).communicate()
    assert "resuming" in out and "finished" in out, out
    assert_same_weights(run, full)


def test_sigterm_stops_cleanly_and_names_the_run(uninterrupted, fake_cifar, tmp_path):
    recipe, full = uninterrupted
    run = tmp_path / "preempted"
    proc = start("--recipe", str(recipe), "--data", str(fake_cifar), "--out", str(run))
    wait_for_line(proc, "epoch 1/3 |")
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate()
    assert proc.returncode == 128 + signal.SIGTERM, out  # the shell convention for a process ended by SIGTERM
    assert f"continue with --resume {run}" in out and "Traceback" not in out, out
    files = RunFiles(run)
    summary = json.loads(files.summary.read_text())
    assert (summary["status"], summary["epochs_done"]) == ("interrupted", 1)
    assert checkpoint.load(files.last)["epoch"] == 1 and not list(run.rglob("*.tmp"))
    out, _ = start("--resume", str(run), "--data", str(fake_cifar)).communicate()
    assert "finished" in out, out
    assert_same_weights(run, full)
