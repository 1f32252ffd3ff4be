"""Design search: space files, budget rejection and repair, validation objective, report, PostgreSQL workers."""
import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
import yaml
from conftest import CLASSES, synthetic_arrays
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState
from pg_server import postgres_url  # noqa: F401  (fixture)

from budgetnet.cli import main
from budgetnet.config import RecipeError
from budgetnet.data import from_arrays
from budgetnet.search import load_space, load_study, pareto_front, run_search, search_report
from budgetnet.spec import fit_channels

BUDGET = 20_000
TINY_PARAMS = {"epochs": 2, "batch_size": 50, "eval_batch_size": 200, "device": "cpu",
               "model.blocks": {"choices": [[1, 1], [1, 1, 1]]},
               "model.channels": {"low": 4, "high": 32, "step": 4},
               "model.pool_size": {"choices": [4, 8, 16]},  # 16 does not fit 3 stages: rejected as invalid
               "optimizer.lr": {"low": 0.05, "high": 0.3, "log": True}}


def write_space(tmp_path, params: dict, base="demo", name="tiny") -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"base": base, "params": params}))
    return str(path)


@pytest.fixture(scope="module")
def val_data():
    """300 training, 200 validation and 200 test synthetic images."""
    return from_arrays(synthetic_arrays(300, seed=0), synthetic_arrays(200, seed=3), synthetic_arrays(200, seed=1),
                       CLASSES)


# ---- space files -------------------------------------------------------------------------------------

def test_space_file_becomes_distributions_and_a_base(tmp_path):
    space = load_space(write_space(tmp_path, {**TINY_PARAMS, "data.val_size": 200}))
    assert space.name == "tiny"
    assert space.params["model.channels"] == IntDistribution(4, 32, step=4)
    assert space.params["optimizer.lr"] == FloatDistribution(0.05, 0.3, log=True)
    assert isinstance(space.params["model.blocks"], CategoricalDistribution)
    recipe = space.recipe({"model.blocks": [1, 1, 1], "model.channels": 8, "model.pool_size": 4,
                           "optimizer.lr": 1e-05})
    assert recipe.model.blocks == [1, 1, 1] and recipe.optimizer.lr == 1e-05
    assert recipe.epochs == 2 and recipe.data.val_size == 200  # fixed values land in the base
    assert recipe.model.kernel_size == 3  # untouched keys come from the base recipe (demo)


def test_shipped_spaces_load():
    for name in ("resnet", "tiny"):
        space = load_space(name)
        assert "model.blocks" in space.params and space.base["data"]["val_size"] > 0


@pytest.mark.parametrize("params, message", [
    ({"optimizer.lrr": {"low": 0.1, "high": 0.2}}, "did you mean 'optimizer.lr'"),
    ({"optimizer.lr": {"low": 0.5, "high": 0.1}}, "optimizer.lr"),
    ({"model.blocks": {"choices": []}}, "at least one value"),
    ({"model.channels": {"low": 8, "high": 16, "stride": 2}}, "low, high, step?, log?"),
    ({"model.channels": {"low": 8.5, "high": 16}}, "params.model.channels=8.5: model.channels must be"),
])
def test_space_errors_name_the_key(tmp_path, params, message):
    with pytest.raises(RecipeError, match=message.replace("?", r"\?")):
        load_space(write_space(tmp_path, {"data.val_size": 100, **params}))


def test_space_needs_a_base(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"params": {"epochs": 1}}))
    with pytest.raises(RecipeError, match="no 'base'"):
        load_space(path)


# ---- searching -----------------------------------------------------------------------------------------

def test_tiny_search_rejects_over_budget_and_optimizes_validation(tmp_path, val_data):
    space = load_space(write_space(tmp_path, {**TINY_PARAMS, "data.val_size": 200}))
    study = run_search(space, tmp_path / "out", trials=10, budget=BUDGET, sampler="random", pruner="none",
                       repair="reject", seed=0, data=val_data)
    trials = study.get_trials()
    assert [t.number for t in trials] == list(range(10))
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    outcomes = {t.user_attrs.get("rejected", t.state.name) for t in trials}
    assert outcomes == {"COMPLETE", "over_budget", "invalid_design"}  # seed 0 draws all three
    for t in trials:
        run_dir = tmp_path / "out" / "trials" / str(t.number)
        if "rejected" in t.user_attrs:
            assert not run_dir.exists()  # never trained
            if t.user_attrs["rejected"] == "over_budget":
                values = {k: json.loads(v) if isinstance(v, str) else v for k, v in t.params.items()}
                assert space.recipe(values).model.count_params() > BUDGET
            continue
        assert t.user_attrs["params"] <= BUDGET
        metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert t.value == max(r["val_acc"] for r in metrics)  # the objective is validation accuracy ...
        assert t.intermediate_values == {r["epoch"]: r["val_acc"] for r in metrics}  # ... reported every epoch
        assert t.user_attrs["test_acc"] == metrics[-1]["test_acc"]

    report = search_report(f"sqlite:///{tmp_path / 'out' / 'search.db'}", tmp_path / "report")
    counts = report["counts"]
    assert counts["trials"] == 10 and counts["complete"] == sum(t.state == TrialState.COMPLETE for t in trials)
    assert counts["rejected_over_budget"] + counts["rejected_invalid"] + counts["complete"] == 10
    done = {t.number: (t.user_attrs["params"], t.value) for t in trials if t.state == TrialState.COMPLETE}
    assert report["best"]["trial"] == max(done, key=lambda n: done[n][1])
    for n in report["front"]:  # nothing beats a front point on both axes
        assert not any(p <= done[n][0] and a >= done[n][1] and (p, a) != done[n] for p, a in done.values())
    md = (tmp_path / "report" / "search.md").read_text()
    assert "## Top" in md and "pareto.png" in md and "rejected_over_budget" in md
    assert (tmp_path / "report" / "pareto.png").stat().st_size > 10_000


def test_repair_fits_c1_and_a_rerun_continues_the_study(tmp_path, val_data):
    path = write_space(tmp_path, {**TINY_PARAMS, "data.val_size": 200, "model.blocks": [1, 1, 1],
                                  "model.channels": {"low": 40, "high": 48, "step": 8}, "model.pool_size": 4})
    for _ in range(2):
        study = run_search(load_space(path), tmp_path / "out", trials=1, budget="20k", pruner="none", data=val_data)
    trials = study.get_trials()
    assert [t.number for t in trials] == [0, 1] and all(t.state == TrialState.COMPLETE for t in trials)
    space = load_space(path)
    fitted = fit_channels(space.recipe({"model.channels": 40}).model, BUDGET)
    for t in trials:
        assert t.user_attrs["repaired"] == f"C_1 {t.params['model.channels']} -> {fitted}"
        assert t.user_attrs["design"]["channels"] == fitted and t.user_attrs["params"] <= BUDGET
        saved = yaml.safe_load((tmp_path / "out" / "trials" / str(t.number) / "recipe.yaml").read_text())
        assert saved["model"]["channels"] == fitted and saved["budget"] == BUDGET


@pytest.mark.parametrize("val_size", [None, 0, {"low": 0, "high": 100}, {"choices": [100, 0]}])
def test_a_space_without_a_validation_split_is_refused(tmp_path, val_size):
    params = TINY_PARAMS if val_size is None else {**TINY_PARAMS, "data.val_size": val_size}  # demo: val_size=0
    with pytest.raises(RecipeError, match="validation split, never on the test set"):
        load_space(write_space(tmp_path, params))


def test_pareto_front():
    points = [(100, 0.5), (50, 0.4), (200, 0.45), (50, 0.3), (300, 0.7), (10, 0.1)]
    assert pareto_front(points) == [5, 1, 0, 4]
    assert pareto_front([]) == []


def test_cli_user_errors(tmp_path, capsys):
    assert main(["search", "--space", "no-such-space", "--trials", "1", "--out", str(tmp_path)]) == 2
    assert "budgetnet search: error: space 'no-such-space'" in capsys.readouterr().err
    optuna.create_study(storage=f"sqlite:///{tmp_path / 'search.db'}", study_name="a")
    assert main(["search-report", "--out", str(tmp_path), "--study", "b"]) == 2
    assert "has no study 'b'; it holds: a" in capsys.readouterr().err


# ---- many workers on PostgreSQL ------------------------------------------------------------------------

WORKER_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def worker(space: str, storage: str, study: str, out, trials: int, data, *extra: str) -> subprocess.Popen:
    """`budgetnet search` as a separate process, as on another machine."""
    return subprocess.Popen([sys.executable, "-m", "budgetnet", "search", "--space", space, "--trials", str(trials),
                             "--storage", storage, "--study", study, "--out", str(out), "--budget", str(BUDGET),
                             "--data", str(data), "--quiet", *extra], env=WORKER_ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def disk_space(tmp_path, epochs: int, train_size: int, **params) -> str:
    return write_space(tmp_path, {**TINY_PARAMS, "epochs": epochs, "data.train_size": train_size,
                                  "data.val_size": 200, "data.test_size": 200, **params})


@pytest.mark.slow
def test_three_workers_on_postgres_record_every_trial_once(tmp_path, fake_cifar, postgres_url):  # noqa: F811
    space, counts = disk_space(tmp_path, epochs=2, train_size=300), [3, 3, 2]
    procs = [worker(space, postgres_url, "three", tmp_path / f"w{i}", n, fake_cifar) for i, n in enumerate(counts)]
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    trials = load_study(postgres_url, "three").get_trials()
    assert len(trials) == sum(counts)
    assert sorted(t.number for t in trials) == list(range(sum(counts)))
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    trained = [t for t in trials if "rejected" not in t.user_attrs]
    assert len({t.user_attrs["run_dir"] for t in trained}) == len(trained)  # one run directory per trial
    assert all(os.path.isfile(os.path.join(t.user_attrs["run_dir"], "summary.json")) for t in trained)
    for i, n in enumerate(counts):  # each worker ran its share, into its own folder
        assert sum(t.user_attrs.get("run_dir", "").startswith(str(tmp_path / f"w{i}")) for t in trials) <= n
    report = search_report(postgres_url, tmp_path / "report", "three")
    assert report["counts"]["trials"] == sum(counts) and (tmp_path / "report" / "search.md").is_file()


@pytest.mark.slow
def test_killed_worker_trial_is_failed_and_a_rerun_continues(tmp_path, fake_cifar, postgres_url):  # noqa: F811
    space = disk_space(tmp_path, epochs=6, train_size=1000, **{"model.pool_size": 4})  # every design trains
    tight = ["--heartbeat", "1", "--pruner", "none", "--repair", "fit-channels"]
    proc = worker(space, postgres_url, "killed", tmp_path / "w0", 5, fake_cifar, *tight)
    deadline, study, victim = time.monotonic() + 300, None, None
    while victim is None:  # wait until a trial is training (it has finished an epoch)
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.2)
        if study is None:
            study = (optuna.load_study(study_name="killed", storage=postgres_url)
                     if "killed" in optuna.get_all_study_names(postgres_url) else None)
            continue
        victim = next((t.number for t in study.get_trials() if t.state == TrialState.RUNNING and
                       (tmp_path / "w0" / "trials" / str(t.number) / "metrics.jsonl").is_file()), None)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert study.trials[victim].state == TrialState.RUNNING  # until the grace period
    time.sleep(3)  # grace period: 2 heartbeats

    rerun = worker(space, postgres_url, "killed", tmp_path / "w1", 1, fake_cifar, *tight)
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err[-3000:]
    assert f"trial {victim} stopped sending heartbeats" in err
    trials = load_study(postgres_url, "killed").get_trials()
    assert trials[victim].state == TrialState.FAIL
    assert [t.number for t in trials] == list(range(victim + 2))
    assert trials[-1].state == TrialState.COMPLETE
    assert search_report(postgres_url, tmp_path / "report", "killed")["counts"]["failed"] == 1
