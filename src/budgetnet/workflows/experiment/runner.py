"""Training the planned runs that are not done, K child `budgetnet train` processes at a time (a GPU and a share
of the CPU cores each), passing Ctrl-C and SIGTERM on to them."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from queue import Queue
from typing import Any

import torch

from ...config import RecipeError
from ...data.cifar import load_split
from ...training.interrupts import stop_on_signals
from ...training.rundir import RunFiles
from .plan import TO_TRAIN, PlannedRun, code_version, made_by, run_status

STOP_POLL_S = 0.5  # how often the waiting experiment looks whether Ctrl-C or SIGTERM asked it to stop


class _Children:
    """The child train processes in flight, so that a stopped experiment stops them and waits for them: none is
    left an orphan writing its run. Each child has its own session, so a signal reaches it once, from here."""

    def __init__(self) -> None:
        self.lock, self.running, self.stopping = threading.Lock(), set(), False

    def run(self, cmd: list[str], **kwargs: Any) -> int | None:
        """Run `cmd` to its end and return its exit status (None, and nothing started, once stopping)."""
        with self.lock:
            if self.stopping:
                return None
            child = subprocess.Popen(cmd, start_new_session=True, **kwargs)
            self.running.add(child)
        try:
            return child.wait()
        finally:
            with self.lock:
                self.running.discard(child)

    def stop(self, signum: int) -> None:
        """Send `signum` to every child (each keeps its last checkpoint and exits) and wait for them all."""
        with self.lock:
            self.stopping, children = True, list(self.running)
        for child in children:
            child.send_signal(signum)
        for child in children:
            child.wait()


def _launch(run: PlannedRun, data_dir: str | Path | None, env: dict[str, str], children: _Children) -> int | None:
    """Train (or continue) one run in a child process, its output appended to <run>/train.log."""
    files = RunFiles(run.path)
    files.root.mkdir(parents=True, exist_ok=True)
    files.refuse_links()
    if not files.recipe.is_file():
        files.write_recipe(run.recipe)
    cmd = [sys.executable, "-m", "budgetnet", "train", "--resume", str(run.path)]
    if data_dir:
        cmd += ["--data", str(data_dir)]
    with files.open_log() as log:
        log.write(f"$ {' '.join(cmd)}\n")
        log.flush()
        return children.run(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env})


def _worker_envs(jobs: int) -> list[dict[str, str]]:
    """The environment of each of `jobs` worker slots: a GPU each (round robin) on CUDA, and an equal share of
    the CPU cores as torch threads unless OMP_NUM_THREADS is set."""
    envs = [{} for _ in range(jobs)]
    if "OMP_NUM_THREADS" not in os.environ:
        for env in envs:
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    if torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        gpus = visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]
        for i, env in enumerate(envs):
            env["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
    return envs


def _set_aside(run: PlannedRun) -> Path:
    """Move a run directory to <experiment>/diverged/<name>.<n>, out of the results, and return where: nothing is
    left at run.path, so run_status(run) reads "new" from then on."""
    folder = run.path.parent.parent / "diverged"
    folder.mkdir(parents=True, exist_ok=True)
    n = 1
    while (folder / f"{run.name}.{n}").exists():
        n += 1
    return run.path.rename(folder / f"{run.name}.{n}")


def train_runs(runs: list[PlannedRun], jobs: int, data_dir: str | Path | None = None) -> list[PlannedRun]:
    """Train the runs that are not done, `jobs` child processes at a time; returns the runs that failed.

    A run that diverged under other code than this (or under code that did not record itself) is set aside and
    trained again: the divergence may have been a bug fixed since. One that diverged under this code is a result."""
    todo = []  # (run, its status)
    for run in runs:
        status = run_status(run)
        if status == "retrain":
            old = _set_aside(run)
            made = made_by(RunFiles(old).read_summary()) or "(unrecorded)"
            print(f"retrain {run.name}: it diverged under budgetnet {made}, this is {code_version()}; the diverged run "
                  f"is kept in {old}", file=sys.stderr)
            status = run_status(run)  # read again: its directory has moved away, so it trains from the start
        if status in ("new", "resume"):
            todo.append((run, status))
        else:
            print(f"skip {run.name}: {status}", file=sys.stderr)
    slots: Queue = Queue()
    for env in _worker_envs(jobs):
        slots.put(env)
    failed, children = [], _Children()

    def work(i: int, run: PlannedRun, status: str) -> None:
        env = slots.get()
        try:
            start = time.perf_counter()
            print(f"[{i}/{len(todo)}] {'resume' if status == 'resume' else 'train'} {run.name} "
                  f"(log: {RunFiles(run.path).train_log})", file=sys.stderr)
            code = _launch(run, data_dir, env, children)
            if children.stopping:  # stopped with the experiment: neither a result nor a failure
                return
            record = RunFiles(run.path).read_run()
            if code and record.status != "diverged":  # a diverged run is a result, not a failure
                failed.append(run)
                print(f"[{i}/{len(todo)}] {run.name} FAILED (exit {code}): see {RunFiles(run.path).train_log}",
                      file=sys.stderr)
            else:
                acc = record.summary.final_test_acc if record.summary is not None else None
                print(f"[{i}/{len(todo)}] {run.name} {record.status}: final test accuracy {acc} "
                      f"({time.perf_counter() - start:.0f} s)", file=sys.stderr)
        finally:
            slots.put(env)

    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        with stop_on_signals() as stop:
            pending = {pool.submit(work, i, r, s) for i, (r, s) in enumerate(todo, 1)}
            while pending:  # wait for the runs, looking at the stop request twice a second
                done, pending = wait(pending, timeout=STOP_POLL_S, return_when=FIRST_EXCEPTION)
                for future in done:
                    future.result()  # a launcher's own error ends the experiment
                stop.check()
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: the runs in flight stop too and keep their last checkpoints
        children.stop(getattr(e, "signum", signal.SIGINT))
        raise
    finally:  # start nothing new
        pool.shutdown(cancel_futures=True)
    return failed

def check_jobs(jobs: int | None) -> int:
    """The number of runs to train at once: `jobs`, by default one per CUDA device, else 1."""
    if jobs is None:
        jobs = torch.cuda.device_count() if torch.cuda.is_available() else 1
    if jobs < 1:
        raise RecipeError(f"--jobs {jobs}: use 1 or more processes")
    return jobs


def check_data(runs: list[PlannedRun], data_dir: str | Path | None) -> None:
    """Fail once, before any training, when runs still to train have no data set to read."""
    if any(run_status(r) in TO_TRAIN for r in runs):
        load_split(runs[0].recipe.data.dataset, "test", data_dir)
