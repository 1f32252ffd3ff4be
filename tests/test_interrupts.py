"""Stopping by signal: Ctrl-C and SIGTERM only record a request that the work checks at safe points; a second one
exits at once. SIGTERM at many seeded random moments of `budgetnet train` and of a `budgetnet search` worker
always ends in exit 143 with one line, never a traceback, and what was stopped continues as if never stopped."""
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml
from optuna.trial import TrialState

from budgetnet.cli import main
from budgetnet.training import checkpoint
from budgetnet.training.interrupts import Interrupted, stop_on_signals
from budgetnet.training.rundir import RunFiles
from budgetnet.workflows.search.storage import load_study, storage_url

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
MOMENTS = 12  # random stops of each command (seeded), in this process: 24 in all


# ---- the request ---------------------------------------------------------------------------------------------

def test_a_signal_only_records_the_request_and_the_block_checks_it():
    before = [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)]
    with stop_on_signals() as stop:
        stop.check()  # nothing received: no-op
        signal.raise_signal(signal.SIGTERM)  # nothing is raised where the signal arrives ...
        assert stop.requested and stop.signum == signal.SIGTERM
        with stop_on_signals() as inner:  # (a run's training inside a search shares the search's request)
            assert inner is stop
        with pytest.raises(Interrupted) as caught:
            stop.check()  # ... only where the work looks
        assert caught.value.signum == signal.SIGTERM
    assert [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)] == before  # restored on the way out


def test_ctrl_c_is_recorded_too():
    with stop_on_signals() as stop:
        signal.raise_signal(signal.SIGINT)
        assert stop.signum == signal.SIGINT


SECOND_SIGNAL = """
import signal, sys, time
from budgetnet.training.interrupts import stop_on_signals
with stop_on_signals() as stop:
    signal.raise_signal(signal.SIGINT)
    print("first recorded", flush=True)
    signal.raise_signal(signal.SIGTERM)
    print("still running after the second")
"""


def test_a_second_signal_exits_at_once_with_the_conventional_code():
    proc = subprocess.run([sys.executable, "-c", SECOND_SIGNAL], capture_output=True, text=True, env=ENV,
                          timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr
    assert proc.stdout == "first recorded\n"  # nothing ran after the second signal
    assert "a second Ctrl-C or SIGTERM exits at once" in proc.stderr and "second SIGTERM: exiting now" in proc.stderr
    assert "Traceback" not in proc.stderr


# ---- SIGTERM at random moments -------------------------------------------------------------------------------

TRAIN = {"model": {"blocks": [1, 1], "channels": 8, "pool_size": 16}, "epochs": 12, "batch_size": 64,
         "eval_batch_size": 256, "device": "cpu", "data": {"train_size": 512, "test_size": 256},
         "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True}, "schedule": {"name": "cosine"},
         "augment": [{"name": "crop", "padding": 4}, {"name": "flip"}]}
SEARCH = {"base": "demo", "params": {
    "epochs": 4, "batch_size": 50, "eval_batch_size": 200, "device": "cpu", "model.pool_size": 4,
    "data.train_size": 600, "data.val_size": 200, "data.test_size": 200,
    "model.blocks": {"choices": [[1, 1], [1, 1, 1]]}, "model.channels": {"low": 4, "high": 16, "step": 4}}}


@pytest.fixture
def late_signals_recorded():
    """Under the test, SIGTERM outside budgetnet's handlers is recorded instead of ending pytest (a stop that came
    after the work ended fails the test's assertions instead)."""
    late = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: late.append(signum))
    yield late
    signal.signal(signal.SIGTERM, previous)


def stop_at(ready: Path, delay: float) -> threading.Thread:
    """A thread that sends this process SIGTERM `delay` seconds after `ready` exists (the command has its handlers
    by then). Waiting for the file is the only wait, so a loaded machine only moves the moment later in the work."""
    def send() -> None:
        deadline = time.monotonic() + 300
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(delay)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def run_stopped(argv: list[str], ready: Path, delay: float, capfd, late: list) -> str:
    """`budgetnet ARGV` in this process, stopped by SIGTERM `delay` s after `ready` exists; its stderr."""
    sender = stop_at(ready, delay)
    code = main(argv)
    sender.join(300)
    err = capfd.readouterr().err
    assert not late, f"the signal came after the command ended: {err[-3000:]}"
    assert code == 128 + signal.SIGTERM, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert err.count("SIGTERM received: stopping at the next safe point") == 1, err[-3000:]
    return err.strip().splitlines()[-1]


@pytest.mark.slow
def test_sigterm_at_random_moments_of_train_then_resume_ends_with_the_uninterrupted_weights(
        fake_cifar, tmp_path, capfd, late_signals_recorded):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(TRAIN))
    common = ["--data", str(fake_cifar), "--quiet"]
    assert main(["train", "--recipe", str(recipe), "--out", str(tmp_path / "full"), *common]) == 0
    full = checkpoint.load(RunFiles(tmp_path / "full").last)
    rng = random.Random(28)
    for i in range(MOMENTS):
        run = tmp_path / f"stopped{i}"
        line = run_stopped(["train", "--recipe", str(recipe), "--out", str(run), *common], run / ".lock",
                           rng.uniform(0.0, 1.0), capfd, late_signals_recorded)
        assert line.startswith("interrupted: the run keeps") and line.endswith(f"--resume {run}"), line
        assert json.loads((run / "summary.json").read_text())["status"] == "interrupted"
        assert main(["train", "--resume", str(run), *common]) == 0, capfd.readouterr().err[-3000:]
        resumed = checkpoint.load(RunFiles(run).last)
        assert resumed["epoch"] == full["epoch"] == TRAIN["epochs"]
        for key, value in full["model"].items():
            assert torch.equal(value, resumed["model"][key]), (i, key)


@pytest.mark.slow
def test_sigterm_at_random_moments_of_a_search_worker_leaves_no_trial_running(
        fake_cifar, tmp_path, capfd, late_signals_recorded):
    space = tmp_path / "tiny.yaml"
    space.write_text(yaml.safe_dump(SEARCH))
    rng = random.Random(29)
    for i in range(MOMENTS):
        out = tmp_path / f"search{i}"
        command = ["search", "--space", str(space), "--out", str(out), "--data", str(fake_cifar), "--budget", "20k",
                   "--total-trials", "3", "--pruner", "none", "--sampler", "random", "--seed", str(i), "--quiet"]
        line = run_stopped(command, out, rng.uniform(0.0, 1.5), capfd, late_signals_recorded)
        assert line.startswith("interrupted"), line
        study = load_study(storage_url(out))
        assert not [t for t in study.get_trials() if t.state == TrialState.RUNNING], (i, line)
        assert main(command) == 0, capfd.readouterr().err[-3000:]  # the rerun completes the study
        trials = load_study(storage_url(out)).get_trials()
        finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        assert len(finished) == 3 and not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
        for failed in (t for t in trials if t.state == TrialState.FAIL):  # each stopped trial was trained again
            run_dir = failed.user_attrs.get("run_dir")
            assert run_dir is None or any(t.user_attrs.get("run_dir") == run_dir for t in finished), (i, run_dir)
