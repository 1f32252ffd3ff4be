"""Experiments: grid expansion, checks before training, skipping and resuming runs, aggregated results."""
import csv
import json

import pytest
import yaml

from budgetnet.cli import main
from budgetnet.config import RecipeError, load_recipe
from budgetnet.data.policies import AutoAugment, Flip
from budgetnet.training.loop import train
from budgetnet.training.rundir import RunFiles
from budgetnet.workflows.experiment.cost import cost_plan, measure_epoch_seconds
from budgetnet.workflows.experiment.plan import code_version, made_by, plan, run_status
from budgetnet.workflows.experiment.results import experiment_results, write_results
from budgetnet.workflows.experiment.runner import _worker_envs
from budgetnet.workflows.experiment.schema import load_experiment

TINY = {"epochs": 2, "batch_size": 64, "eval_batch_size": 256, "data.train_size": 256, "data.test_size": 128,
        "model.blocks": [1, 1], "model.channels": 8, "model.pool_size": 16}


def write_experiment(tmp_path, **changes):
    exp = {"description": "a tiny grid", "base": "demo",
           "axes": {"batch_size": [32, 64], "opt": {"sgd": {"optimizer.name": "sgd"},
                                                    "adam": {"optimizer.name": "adam", "optimizer.lr": 1e-3}}},
           "seeds": [0, 1], "scales": {"smoke": {**TINY, "seeds": [0]}, "full": {}}, "plots": ["test_curves"]}
    exp.update(changes)
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(exp, sort_keys=False))
    return path


def test_grid_is_the_product_of_axes_and_seeds_with_stable_names(tmp_path):
    exp = load_experiment(write_experiment(tmp_path))
    runs = plan(exp, "full", tmp_path / "out")
    assert len(runs) == 2 * 2 * 2
    assert [r.name for r in runs[:3]] == ["batch_size=32,opt=sgd-seed0", "batch_size=32,opt=sgd-seed1",
                                          "batch_size=32,opt=adam-seed0"]
    adam = runs[2].recipe
    assert (adam.batch_size, adam.optimizer.name, adam.optimizer.lr, adam.seed) == (32, "adam", 1e-3, 0)
    assert runs[-1].recipe.batch_size == 64 and runs[-1].seed == 1
    assert runs[0].path == tmp_path / "out" / "runs" / runs[0].name
    assert [r.name for r in plan(exp, "full", tmp_path / "out")] == [r.name for r in runs]  # stable


def test_scale_overrides_apply_under_the_axes_and_can_set_seeds(tmp_path):
    exp = load_experiment(write_experiment(tmp_path))
    runs = plan(exp, "smoke", tmp_path / "out")
    assert len(runs) == 4 and {r.seed for r in runs} == {0}
    assert {r.recipe.batch_size for r in runs} == {32, 64}  # the axis wins over the scale's batch_size
    assert all(r.recipe.epochs == 2 and r.recipe.model.channels == 8 for r in runs)
    assert all("smoke" in r.recipe.description for r in runs)


def test_an_experiment_without_axes_is_one_setting(tmp_path):
    runs = plan(load_experiment(write_experiment(tmp_path, axes={})), "full", tmp_path / "out")
    assert [r.name for r in runs] == ["seed0", "seed1"]


@pytest.mark.parametrize("changes, message", [
    ({"plot": ["lr"]}, "did you mean 'plots'"),
    ({"plots": ["curve"]}, "did you mean 'curves'"),
    ({"axes": {"batch_size": 64}}, "axis 'batch_size' must be a non-empty list"),
    ({"seeds": "0"}, "seeds must be a non-empty list"),
    ({"axes": {"optimizer.nme": ["adam"]}}, "unknown recipe key 'optimizer.nme'"),
    ({"axes": {"model.channels": [400]}}, "run model.channels=400-seed0"),
    ({"axes": {"optimizer.lr": [0.1, "0.1"]}}, "two settings share the run name"),
])
def test_bad_experiments_fail_before_training_naming_the_problem(tmp_path, changes, message):
    with pytest.raises(RecipeError, match=message):
        plan(load_experiment(write_experiment(tmp_path, **changes)), "full", tmp_path / "out")


def test_unknown_scale_lists_the_scales(tmp_path):
    with pytest.raises(RecipeError, match="no scale 'smok'; did you mean 'smoke'.*smoke, full"):
        plan(load_experiment(write_experiment(tmp_path)), "smok", tmp_path / "out")


def test_a_run_directory_with_another_recipe_is_refused(tmp_path):
    exp = load_experiment(write_experiment(tmp_path))
    run = plan(exp, "smoke", tmp_path / "out")[0]
    run.path.mkdir(parents=True)
    RunFiles(run.path).recipe.write_text(yaml.safe_dump(run.recipe.to_dict()))
    plan(exp, "smoke", tmp_path / "out")  # the same recipe is fine, whatever its description
    RunFiles(run.path).recipe.write_text(yaml.safe_dump({**run.recipe.to_dict(), "description": "renamed"}))
    plan(exp, "smoke", tmp_path / "out")
    with pytest.raises(RecipeError, match="trained with a different recipe.*epochs: 2 there, 4 now"):
        plan(load_experiment(write_experiment(tmp_path, scales={"smoke": {k: v for k, v in TINY.items()
                                                                           if k != "epochs"}})),
             "smoke", tmp_path / "out")


def test_epoch_scale_keeps_the_schedule_shape(tmp_path):
    # 1200 epochs with warm restarts of 80 * 2^k epochs (80 + 160 + 320 + 640 = 1200): at 1/400 of the epochs,
    # 3 epochs whose cycles are 0.2, 0.4, 0.8 and 1.6 epochs, still ending with the run
    setting = {"epochs": 1200, "schedule.name": "warm_restarts", "schedule.T_0": 80, "schedule.T_mult": 2,
               "schedule.warmup_epochs": 40}
    exp = load_experiment(write_experiment(tmp_path, axes={"s": {"sgdr": setting, "short": {"epochs": 100}}},
                                           scales={"smoke": {**{k: v for k, v in TINY.items() if k != "epochs"},
                                                             "epoch_scale": 1 / 400}}))
    sgdr, short = plan(exp, "smoke", tmp_path / "out")[::2]
    assert (sgdr.recipe.epochs, sgdr.recipe.schedule.T_0, sgdr.recipe.schedule.warmup_epochs) == \
        (3, pytest.approx(0.2), pytest.approx(0.1))
    assert short.recipe.epochs == 1  # never below one epoch
    with pytest.raises(RecipeError, match="epoch_scale must be a fraction"):
        plan(load_experiment(write_experiment(tmp_path, scales={"smoke": {"epoch_scale": 2}})), "smoke", tmp_path)


def test_dry_run_prints_the_cost_measured_on_this_device(tmp_path, fake_cifar):
    exp = load_experiment(write_experiment(tmp_path, axes={"batch_size": [32, 64]}))
    done, new = plan(exp, "smoke", tmp_path / "out")
    train(done.recipe, done.path, data_dir=fake_cifar, progress=False)
    table = cost_plan([done, new]).splitlines()
    assert table[1].split()[1:] == ["finished", "0", "-", "-"]
    name, status, epochs, per_epoch, seconds = table[2].split()
    assert (status, epochs) == ("new", "2") and float(per_epoch) > 0
    assert float(seconds) == pytest.approx(2 * float(per_epoch), abs=1)
    assert table[-1].startswith(f"total {seconds} s") and "with 3 steps" in table[-1]


def test_the_cost_is_timed_on_the_training_loops_own_step(tmp_path, monkeypatch):
    """measure_epoch_seconds trains with the loop itself (its step: schedule, decay, EMA; its evaluation), a warm-up
    epoch and a timed one of `steps` steps each, and writes nothing."""
    import budgetnet.training.loop

    calls = {"step": 0, "schedule": 0, "evaluate": 0}
    step, evaluate = budgetnet.training.loop._optimizer_step, budgetnet.training.loop._evaluate

    def counted_step(state, loss, recipe):
        calls["step"] += 1
        before = state.scheduler.last_epoch
        step(state, loss, recipe)
        calls["schedule"] += state.scheduler.last_epoch - before

    def counted_evaluate(*args):
        calls["evaluate"] += 1
        return evaluate(*args)

    monkeypatch.setattr(budgetnet.training.loop, "_optimizer_step", counted_step)
    monkeypatch.setattr(budgetnet.training.loop, "_evaluate", counted_evaluate)
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe("demo", [f"{k}={json.dumps(v)}" for k, v in TINY.items()] + ["ema.enabled=true",
                                                                                         "eval_every=4"])
    seconds = measure_epoch_seconds(recipe, steps=2)
    assert calls == {"step": 4, "schedule": 4, "evaluate": 2} and 0 < seconds < 60
    assert list(tmp_path.iterdir()) == []


def test_a_run_that_diverged_under_other_code_is_retrained(tmp_path, fake_cifar):
    exp_file = write_experiment(tmp_path, axes={})
    out = tmp_path / "out"
    run = plan(load_experiment(exp_file), "smoke", out)[0]
    train(run.recipe, run.path, data_dir=fake_cifar, progress=False)
    summary = json.loads(RunFiles(run.path).summary.read_text())
    assert made_by(RunFiles(run.path).read_summary()) == code_version()  # train records the code that runs now
    RunFiles(run.path).summary.write_text(json.dumps({**summary, "status": "diverged"}))
    assert run_status(run) == "diverged"  # diverged under this code: a result, skipped
    unrecorded = {k: v for k, v in summary.items() if k not in ("budgetnet_version", "budgetnet_commit")}
    RunFiles(run.path).summary.write_text(json.dumps({**unrecorded, "status": "diverged"}))  # made before the record
    assert run_status(run) == "retrain"
    assert main(["experiment", str(exp_file), "--scale", "smoke", "--out", str(out), "--data", str(fake_cifar)]) == 0
    assert run_status(run) == "finished" and (out / "diverged" / f"{run.name}.1" / "summary.json").is_file()


@pytest.mark.parametrize("name", ["batch-size", "lr-schedule", "augmentation", "optimizer", "final"])
def test_shipped_experiments_plan_at_every_scale(tmp_path, name):
    exp = load_experiment(name)
    for scale in ("smoke", "hour", "full"):
        assert plan(exp, scale, tmp_path / scale)
    seed = load_recipe("seed")
    smoke = plan(exp, "smoke", tmp_path / "smoke")
    assert all(r.recipe.epochs <= 3 and r.recipe.data.train_size <= 2000 for r in smoke)
    full = {r.setting.label: r.recipe for r in plan(exp, "full", tmp_path / "full")}
    hour = {r.setting.label: r.recipe for r in plan(exp, "hour", tmp_path / "hour")}
    for label, recipe in full.items():
        if "study-" not in label:  # controlled settings train the seed recipe's 1200 epochs (study-*: their own)
            assert recipe.epochs == seed.epochs
        assert hour[label].epochs == max(1, round(recipe.epochs / 40)) and hour[label].model == seed.model
        assert hour[label].data.train_size is None  # the study's design on all the data
        if recipe.schedule.name == "warm_restarts":  # cycles of 80, 160, 320, 640 epochs end with the run
            assert (recipe.schedule.T_0, recipe.schedule.T_mult) == (80, 2)
            assert recipe.schedule.T_0 * (1 + 2 + 4 + 8) == recipe.epochs
            assert hour[label].schedule.T_0 * 15 == pytest.approx(hour[label].epochs)


def test_each_setting_trains_what_its_label_says(tmp_path):
    seed = load_recipe("seed").to_dict()

    def changes(recipe):
        """The keys where a setting's recipe differs from the seed recipe, test_every aside: every scale of the
        study's experiments tests every 10 epochs, as the study's scripts did."""
        got = recipe.to_dict()
        assert got["test_every"] == 10
        return {k for k in got if k not in ("description", "seed", "test_every") and got[k] != seed[k]}

    aug = {r.setting.label: r.recipe for r in plan(load_experiment("augmentation"), "full", tmp_path / "a")}
    assert list(aug) == ["augment=flip", "augment=autoaugment", "augment=augmix", "augment=study-flip",
                         "augment=study-autoaugment"]
    assert aug["augment=flip"].augment == [Flip()]  # the text's random flip, no crop
    assert aug["augment=autoaugment"].augment[-1] == AutoAugment(policy="cifar10")
    assert changes(aug["augment=augmix"]) == set()  # AugMix + JSD is the seed recipe itself
    assert {changes(aug[f"augment={k}"]) == {"augment"} for k in ("flip", "autoaugment")} == {True}
    study_flip = aug["augment=study-flip"]  # model1_batch128.py
    assert (study_flip.optimizer.name, study_flip.optimizer.lr, study_flip.optimizer.weight_decay,
            study_flip.schedule.name, study_flip.batch_size, study_flip.epochs) == ("adam", 1e-3, 0, "constant", 128, 250)

    opt = {r.setting.label: r.recipe for r in plan(load_experiment("optimizer"), "full", tmp_path / "o")}
    assert changes(opt["optimizer=sgd"]) == set()  # the study's SGDR 95.6% run (model7) is the seed recipe
    assert changes(opt["optimizer=sgdr"]) == {"schedule"} and opt["optimizer=sgdr"].augment[-1].jsd
    assert changes(opt["optimizer=adam"]) == {"optimizer"} and changes(opt["optimizer=radam"]) == {"optimizer"}
    study_sgd = opt["optimizer=study-sgd"]  # model8.py
    assert (study_sgd.augment, study_sgd.batch_size, study_sgd.epochs, study_sgd.optimizer.nesterov) == \
        ([AutoAugment(policy="cifar10")], 64, 500, True)
    assert (opt["optimizer=study-radam"].optimizer.lr, opt["optimizer=study-radam"].epochs) == (1.5e-4, 500)

    sched = {r.setting.label: r.recipe for r in plan(load_experiment("lr-schedule"), "full", tmp_path / "s")}
    assert changes(sched["schedule=cosine"]) == set() and changes(sched["schedule=warm_restarts"]) == {"schedule"}
    batch = {r.setting.label: r.recipe for r in plan(load_experiment("batch-size"), "full", tmp_path / "b")}
    assert changes(batch["batch_size=64"]) == {"batch_size"} and changes(batch["batch_size=128"]) == set()


def test_runs_of_one_experiment_do_not_leak_overrides_into_each_other(tmp_path):
    runs = {r.setting.label: r.recipe for r in plan(load_experiment("optimizer"), "full", tmp_path)}
    assert runs["optimizer=adam"].schedule.name == "cosine" and runs["optimizer=adam"].schedule.T_0 == 10


def test_worker_slots_share_the_cores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert [e["OMP_NUM_THREADS"] for e in _worker_envs(4)] == ["2"] * 4
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert all("OMP_NUM_THREADS" not in e for e in _worker_envs(2))


def fake_results(exp, runs, accs, seen=()):
    """Run directories as training leaves them, with chosen final accuracies and best seen every test_every epochs
    (`seen`, one per run; none recorded without) (no training)."""
    for i, (run, acc) in enumerate(zip(runs, accs)):
        best_seen = seen[i] if i < len(seen) else None
        files = RunFiles(run.path)
        run.path.mkdir(parents=True)
        files.recipe.write_text(yaml.safe_dump(run.recipe.to_dict()))
        rows = [{"epoch": e, "lr": 0.1, "train_loss": 2.0 / e, "train_acc": acc / 2 * e, "test_loss": 2.0 / e,
                 "test_acc": acc / 2 * e, "seconds": 1.0, "images_per_s": 100.0} for e in (1, 2)]
        files.metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
        files.summary.write_text(json.dumps({
            "status": "finished", "params": 1234, "epochs": 2, "epochs_done": 2, "final_test_acc": acc,
            "final_test_loss": 1.0, "best_test_acc": acc, "best_acc": acc, "train_seconds": 10 * acc,
            **({"best_seen_test_acc": best_seen} if best_seen is not None else {})}))


def test_results_average_seeds_per_setting_and_record_the_scale(tmp_path):
    exp = load_experiment(write_experiment(tmp_path, axes={"batch_size": [32, 64]}))
    runs = plan(exp, "full", tmp_path / "out")  # 2 settings x seeds 0, 1
    fake_results(exp, runs, [0.5, 0.7, 0.2, 0.2])
    write_results(exp, "full", runs, tmp_path / "out")
    rows = list(csv.DictReader((tmp_path / "out" / "results.csv").open()))
    assert [(r["scale"], r["setting"], r["batch_size"], r["runs"]) for r in rows] == [
        ("full", "batch_size=32", "32", "2"), ("full", "batch_size=64", "64", "2")]
    assert float(rows[0]["final_test_acc_pct_mean"]) == pytest.approx(60.0)  # percent, like results.md
    assert float(rows[0]["final_test_acc_pct_std"]) == pytest.approx(14.14, abs=1e-2)  # sample std
    assert float(rows[1]["final_test_acc_pct_std"]) == 0.0  # two seeds that agree
    assert rows[0]["train_seconds_mean"] == "6"  # whole seconds (10 * acc: 5 and 7)
    md = (tmp_path / "out" / "results.md").read_text()
    assert "full scale" in md.splitlines()[0] and "60.00 ± 14.14" in md and "20.00 ± 0.00" in md
    assert (tmp_path / "out" / "test_curves.png").stat().st_size > 10_000


def test_results_are_computed_without_writing_and_rendered_from_that(tmp_path):
    exp = load_experiment(write_experiment(tmp_path, axes={"batch_size": [32, 64]}))
    runs = plan(exp, "full", tmp_path / "out")
    fake_results(exp, runs[:2], [0.5, 0.7])  # batch 64's runs not trained yet: no row
    before = sorted(tmp_path.rglob("*"))
    results = experiment_results(runs)
    assert sorted(tmp_path.rglob("*")) == before  # computing writes nothing
    assert (results.settings, list(results.groups), results.axis_columns) == (2, ["batch_size=32"], ["batch_size"])
    assert [(r["setting"], r["runs"], r["final_test_acc_pct_mean"]) for r in results.rows] == [
        ("batch_size=32", 2, pytest.approx(60.0))]
    write_results(exp, "full", runs, tmp_path / "out")
    rows = list(csv.DictReader((tmp_path / "out" / "results.csv").open()))
    assert [(r["setting"], float(r["final_test_acc_pct_mean"])) for r in rows] == [("batch_size=32", 60.0)]


def test_results_show_the_best_seen_beside_the_final_and_a_dash_where_runs_lack_it(tmp_path):
    exp = load_experiment(write_experiment(tmp_path, axes={"batch_size": [32, 64]},
                                           scales={"full": {"test_every": 10}}))
    runs = plan(exp, "full", tmp_path / "out")
    fake_results(exp, runs, [0.5, 0.7, 0.2, 0.2], seen=[0.6, 0.8])  # batch 64's runs predate test_every
    write_results(exp, "full", runs, tmp_path / "out")
    rows = list(csv.DictReader((tmp_path / "out" / "results.csv").open()))
    assert [(r["best_seen_test_acc_pct_mean"], r["test_every"]) for r in rows] == [("70.0", "10"), ("", "10")]
    md = (tmp_path / "out" / "results.md").read_text()
    assert "| final test acc (%) | best test acc seen every 10 epochs (%) |" in md
    assert "| 60.00 ± 14.14 | 70.00 ± 14.14 |" in md and "| 20.00 ± 0.00 | - |" in md
    assert "chosen on the test set, as the study did" in md


def test_smoke_results_say_so_in_the_title_and_list_what_changed(tmp_path):
    exp = load_experiment(write_experiment(tmp_path, axes={}))
    runs = plan(exp, "smoke", tmp_path / "out")
    fake_results(exp, runs, [0.3])
    write_results(exp, "smoke", runs, tmp_path / "out")
    md = (tmp_path / "out" / "results.md").read_text()
    assert "smoke scale" in md.splitlines()[0]
    assert "not the study's setting" in md and 'model.channels=8' in md
    row = list(csv.DictReader((tmp_path / "out" / "results.csv").open()))[0]
    assert (row["scale"], row["final_test_acc_pct_mean"], row["final_test_acc_pct_std"]) == ("smoke", "30.0", "")
    assert "30.00 |" in md and "30.00 ±" not in md  # one seed: no std


def test_finished_runs_are_skipped_and_killed_runs_resume(tmp_path, fake_cifar):
    exp_file = write_experiment(tmp_path, axes={"batch_size": [32, 64]})
    out = tmp_path / "out"
    done, killed = plan(load_experiment(exp_file), "smoke", out)
    train(done.recipe, done.path, data_dir=fake_cifar, progress=False)

    def kill_after_first_epoch(row):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(killed.recipe, killed.path, data_dir=fake_cifar, progress=False, on_epoch=kill_after_first_epoch)
    first_epoch = RunFiles(killed.path).read_metrics()
    assert [run_status(done), run_status(killed)] == ["finished", "resume"]
    done_mtime = RunFiles(done.path).metrics.stat().st_mtime_ns

    assert main(["experiment", str(exp_file), "--scale", "smoke", "--out", str(out), "--data", str(fake_cifar),
                 "--jobs", "2"]) == 0
    assert RunFiles(done.path).metrics.stat().st_mtime_ns == done_mtime and not (done.path / "train.log").exists()
    resumed = RunFiles(killed.path).read_metrics()
    assert [r.epoch for r in resumed] == [1, 2] and resumed[0] == first_epoch[0]
    assert "resuming" in (killed.path / "train.log").read_text()
    assert json.loads(RunFiles(killed.path).summary.read_text())["status"] == "finished"
    assert {p.name for p in out.glob("*.png")} == {"test_curves.png"}
    assert len(list(csv.DictReader((out / "results.csv").open()))) == 2

    log = (killed.path / "train.log").read_text()
    assert main(["experiment", str(exp_file), "--scale", "smoke", "--out", str(out), "--data", str(fake_cifar)]) == 0
    assert (killed.path / "train.log").read_text() == log  # all done: nothing is trained again


def test_cli_dry_run_and_usage_errors(tmp_path, capsys):
    exp_file = write_experiment(tmp_path)
    assert main(["experiment", str(exp_file), "--scale", "smoke", "--out", str(tmp_path / "o"), "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert "new" in err and "s/epoch" in err and "total" in err and not (tmp_path / "o").exists()
    assert main(["experiment", "augmentaton", "--dry-run"]) == 2
    assert "did you mean 'augmentation'" in capsys.readouterr().err
