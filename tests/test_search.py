"""Design search: space files, budget rejection and repair, validation objective, report, PostgreSQL workers."""
import json
import math
import os
import queue
import random
import re
import signal
import subprocess
import sys
import threading
import time
import warnings
from types import SimpleNamespace

import optuna
import pytest
import torch
import yaml
from conftest import CLASSES, synthetic_arrays
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState
from pg_server import postgres_url  # the fixture, for the tests that take it

from budgetnet.cli import main
from budgetnet.config import RecipeError, load_recipe
from budgetnet.data.cifar import from_arrays
from budgetnet.design.spec import SpecError, fit_channels
from budgetnet.training.interrupts import Interrupted
from budgetnet.workflows.search.errors import SearchError
from budgetnet.workflows.search.gpu import claim_gpu, worker_device
from budgetnet.workflows.search.report import (TIE, _importances, paired_difference, pareto_front, search_report,
                                               versus_best, worker_summary)
from budgetnet.workflows.search.space import check_budget, describe, design_points, load_space, narrowest_widths
from budgetnet.workflows.search.storage import (TrialAttrs, load_study, pack_correct, shown_url, storage_url,
                                                unpack_correct)
from budgetnet.workflows.search.worker import _sampler, run_search

BUDGET = 20_000
WORKER_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TINY_PARAMS = {"epochs": 2, "batch_size": 50, "eval_batch_size": 200, "device": "cpu",
               "model.blocks": {"choices": [[1, 1], [1, 1, 1]]},
               "model.channels": {"low": 4, "high": 32, "step": 4},
               "model.pool_size": {"choices": [4, 8, 16]},  # 16 does not fit 3 stages: rejected as invalid
               "optimizer.lr": {"low": 0.05, "high": 0.3, "log": True}}


def write_space(tmp_path, params: dict, base="demo", name="tiny") -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"base": base, "params": params}, sort_keys=False))  # in order, as written
    return str(path)


@pytest.fixture(scope="module")
def val_data():
    """300 training, 200 validation and 200 test synthetic images."""
    return from_arrays(synthetic_arrays(300, seed=0), synthetic_arrays(200, seed=3), synthetic_arrays(200, seed=1),
                       CLASSES)


# ---- space files -------------------------------------------------------------------------------------

def test_trial_attrs_are_stored_by_their_names_and_read_back_as_a_record():
    """What a study's storage holds per trial keeps its names: a study written before TrialAttrs reads the same."""
    study = optuna.create_study()
    trial = study.ask()
    trial.set_user_attr("run_dir", "trials/0")  # as an older budgetnet wrote it
    TrialAttrs.record(trial, params=1234, rejected="over_budget", test_acc=None)
    assert trial.user_attrs == {"run_dir": "trials/0", "params": 1234, "rejected": "over_budget", "test_acc": None}
    attrs = TrialAttrs.of(study.trials[0])
    assert (attrs.run_dir, attrs.params, attrs.rejected, attrs.failed) == ("trials/0", 1234, "over_budget", None)
    with pytest.raises(TypeError, match="not a trial attr: param"):
        TrialAttrs.record(trial, param=1)


def test_a_design_is_described_with_its_pool_type_and_missing_shortcut():
    assert describe(load_recipe("small").model) == "B=[1, 1, 1] C_1=[64, 256, 256] F=3 K=1 P=3 (max) single no shortcut"
    assert describe(load_recipe("demo").model).endswith(" basic")  # average pool and shortcuts: said by omission
    assert " P=1 single " in describe(load_recipe("small", ["model.pool_size=1"]).model)  # 1 pixel: max = avg


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


def test_the_fast_family_space_trains_smalls_recipe_without_being_given_smalls_design():
    space, small = load_space("fast-family"), load_recipe("small")
    base = space.recipe({})
    assert base.model != small.model and base.model.channels != small.model.channels  # not small's design
    assert (base.optimizer, base.schedule, base.lookahead, base.augment, base.tta) == \
        (small.optimizer, small.schedule, small.lookahead, small.augment, small.tta)  # small's training
    assert base.data.val_size > 0 and base.eval_every == 1 and base.epochs < small.epochs  # short trials, pruned
    assert base.max_gflops >= small.model.gflop_per_image() and base.budget == 5_000_000
    assert {f"model.{k}.{i}" for k in ("channels", "blocks", "kernel_size") for i in range(3)} <= set(space.params)


@pytest.mark.parametrize("params, message", [
    ({"optimizer.lrr": {"low": 0.1, "high": 0.2}}, "did you mean 'optimizer.lr'"),
    ({"optimizer.lr": {"low": 0.5, "high": 0.1}}, "optimizer.lr"),
    ({"model.blocks": {"choices": []}}, "at least one value"),
    ({"model.channels": {"low": 8, "high": 16, "stride": 2}}, "low, high, step?, log?"),
    ({"model.channels": {"low": 8.5, "high": 16}}, "params.model.channels=8.5: model.channels must be"),
    ({"model.pool_size": {"choices": [1, 3]},
      "model.pool_type": {"choices": ["max", "avg"], "when": {"model.pool_size": 2}}},
     r"params.model.pool_type.when: give model.pool_size one or more of its choices \[1, 3\], not 2"),
    ({"model.pool_type": {"choices": ["max", "avg"], "when": {"model.pool_size": 3}},
      "model.pool_size": {"choices": [1, 3]}}, "'model.pool_size' is not a key sampled from choices above"),
    ({"model.pool_size": {"low": 1, "high": 3, "step": 2},
      "model.pool_type": {"choices": ["max", "avg"], "when": {"model.pool_size": 3}}}, "move that entry above"),
    ({"model.pool_type": {"choices": ["max", "avg"], "when": "model.pool_size"}}, "write it as"),
    ({"model.pool_type": {"when": {"model.pool_size": 3}}}, "'when' conditions a sampled key"),
    ({"model.blocks": {"choices": [[1, 1], [1, 1, 1]]},
      "model.channels": {"low": 8, "high": 16, "when": {"model.blocks": [[1, 1]]}}}, "takes no 'when'"),
])
def test_space_errors_name_the_key(tmp_path, params, message):
    with pytest.raises(RecipeError, match=message.replace("?", r"\?")):
        load_space(write_space(tmp_path, {"data.val_size": 100, **params}))


def test_a_conditional_key_is_sampled_only_where_its_condition_holds(tmp_path):
    """A basic block needs its shortcut: drawn only with one, each trial records only what it sampled, and every
    draw builds a valid design (without `when`, a basic block without a shortcut is drawn and rejected)."""
    space = load_space(write_space(tmp_path, {  # small's base design: single blocks, no shortcut, max pool 3
        "data.val_size": 100, "model.pool_size": {"choices": [1, 3]},
        "model.pool_type": {"choices": ["max", "avg"], "when": {"model.pool_size": 3}},
        "model.residual": {"choices": [False, True]},
        "model.block": {"choices": ["single", "basic"], "when": {"model.residual": [True]}}}, base="small"))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(40):
        trial = study.ask()
        values = space.suggest(trial)
        assert ("model.block" in values) == values["model.residual"] and trial.params.keys() == values.keys()
        assert ("model.pool_type" in values) == (values["model.pool_size"] == 3)
        recipe = space.recipe(values)  # no SpecError: the base's single block stands without a shortcut
        seen.add((recipe.model.block, recipe.model.residual))
        study.tell(trial, 0.5)
    assert seen == {("single", False), ("single", True), ("basic", True)}


def test_the_dry_run_and_budget_check_count_each_fast_family_design_once():
    """fast-family draws the pool's type only for a 3-pixel pool and the block type only with a shortcut: its
    points are distinct designs that all build (before `when`, 3,456 points, a quarter of them basic blocks without
    the shortcut they need and a sixth 1-pixel pools drawn twice)."""
    space = load_space("fast-family")
    points, exact = design_points(space)
    # blocks and kernel per stage; the pool (1, or 3 max or avg); the shortcut (none: single; with: single or basic)
    assert exact and len(points) == 3 ** 3 * 2 ** 3 * (1 + 2) * (1 + 2)
    designs = {json.dumps(space.recipe({**p, **narrowest_widths(space)}).model.to_dict(), sort_keys=True)
               for p in points}  # SpecError for an invalid one
    assert len(designs) == len(points)
    assert all(p.get("model.pool_type") is None for p in points if p["model.pool_size"] == 1)


def test_space_needs_a_base(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"params": {"epochs": 1}}))
    with pytest.raises(RecipeError, match="no 'base'"):
        load_space(path)


# ---- searching -----------------------------------------------------------------------------------------

def test_tiny_search_trains_within_budget_and_optimizes_validation(tmp_path, val_data):
    space = load_space(write_space(tmp_path, {**TINY_PARAMS, "data.val_size": 200}))
    study = run_search(space, tmp_path / "out", trials=10, budget=BUDGET, sampler="random", pruner="none",
                       repair="reject", data=val_data)  # any seed: every check below holds for every draw
    trials = study.get_trials()
    assert [t.number for t in trials] == list(range(10))
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    outcomes = {"COMPLETE": 0, "over_budget": 0, "invalid_design": 0}
    for t in trials:
        outcomes[t.user_attrs.get("rejected", t.state.name)] += 1
        values = {k: json.loads(v) if isinstance(v, str) else v for k, v in t.params.items()}
        run_dir = tmp_path / "out" / "trials" / str(t.number)
        if t.user_attrs.get("rejected") == "invalid_design":  # no C_1 makes it valid
            for c in (4, 32):
                with pytest.raises(SpecError):
                    space.recipe({**values, "model.channels": c})
        if t.user_attrs.get("rejected") == "over_budget":  # even the narrowest C_1 of the space is over
            assert space.recipe({**values, "model.channels": 4}).model.count_params() > BUDGET
        if "rejected" in t.user_attrs:
            assert not run_dir.exists()  # never trained
            continue
        # C_1 was sampled within the budget: the value the study holds is the one trained, and the range it was
        # drawn from ends at the widest multiple of 4 that fits (or at the space's 32)
        saved = yaml.safe_load((run_dir / "recipe.yaml").read_text())
        assert values["model.channels"] == saved["model"]["channels"] == t.user_attrs["design"]["channels"]

        def count(c: int) -> int:
            return space.recipe({**values, "model.channels": c}).model.count_params()

        assert count(values["model.channels"]) == t.user_attrs["params"] <= BUDGET
        high = t.distributions["model.channels"].high
        assert count(high) <= BUDGET and (high == 32 or count(high + 4) > BUDGET)
        assert t.user_attrs["run_dir"] == f"trials/{t.number}"  # relative to --out
        assert t.user_attrs["recipe"] == {**saved, "device": "cpu"}  # the study holds the whole recipe
        metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert t.value == max(r["val_acc"] for r in metrics)  # the objective is validation accuracy ...
        assert t.intermediate_values == {r["epoch"]: r["val_acc"] for r in metrics}  # ... reported every epoch
        assert t.user_attrs["test_acc"] == metrics[-1]["test_acc"]
        assert unpack_correct(t.user_attrs["val_correct"], 200).mean() == pytest.approx(t.value, abs=1e-9)

    report = search_report(f"sqlite:///{tmp_path / 'out' / 'search.db'}", tmp_path / "report")
    counts = report["counts"]
    assert (counts["trials"], counts["complete"], counts["rejected_over_budget"], counts["rejected_invalid"]) == \
        (10, outcomes["COMPLETE"], outcomes["over_budget"], outcomes["invalid_design"])
    done = {t.number: (t.user_attrs["params"], t.value) for t in trials if t.state == TrialState.COMPLETE}
    if not done:
        return
    assert report["best"]["trial"] == max(done, key=lambda n: done[n][1])
    for n in report["front"]:  # nothing beats a front point on both axes
        assert not any(p <= done[n][0] and a >= done[n][1] and (p, a) != done[n] for p, a in done.values())
    md = (tmp_path / "report" / "search.md").read_text()
    assert "## Top" in md and "pareto.png" in md and "rejected_over_budget" in md
    assert "| vs best (s.e.) |" in md and f"the difference from trial {report['best']['trial']}'s" in md
    assert set(report["ties"]) < set(done)  # the best is not its own tie
    assert str(tmp_path / "out" / "trials") not in md  # run directories relative to --out, not on one disk
    best = report["best"]["trial"]
    assert "`budgetnet train --recipe best-recipe.yaml`" in md and f"`trials/{best}`" in md
    assert load_recipe(str(tmp_path / "report" / "best-recipe.yaml")) == \
        load_recipe(str(tmp_path / "out" / "trials" / str(best) / "recipe.yaml"), ["device=cpu"])
    assert (tmp_path / "report" / "pareto.png").stat().st_size > 10_000


def test_a_search_over_a_conditional_space_trains_the_bases_value_where_a_key_is_not_sampled(tmp_path, val_data):
    space = load_space(write_space(tmp_path, {
        **TINY_PARAMS, "epochs": 1, "data.val_size": 200, "model.pool_size": {"choices": [4, 8]},
        "model.pool_type": {"choices": ["max"], "when": {"model.pool_size": 4}}}))  # demo's pool: avg
    study = run_search(space, tmp_path / "out", trials=6, budget=BUDGET, sampler="random", pruner="none",
                       seed=0, data=val_data)
    trained = [t for t in study.get_trials() if "recipe" in t.user_attrs]
    assert {t.params["model.pool_size"] for t in trained} == {4, 8}  # seed 0 draws both
    for t in trained:
        assert ("model.pool_type" in t.params) == (t.params["model.pool_size"] == 4)
        assert t.user_attrs["recipe"]["model"]["pool_type"] == ("max" if t.params["model.pool_size"] == 4 else "avg")
    report = search_report(f"sqlite:///{tmp_path / 'out' / 'search.db'}", tmp_path / "report")
    assert report["counts"]["trials"] == 6 and (tmp_path / "report" / "search.md").is_file()


def test_designs_that_cannot_be_trained_are_rejected_untrained(tmp_path, val_data, capsys):
    space = load_space(write_space(tmp_path, {**TINY_PARAMS, "data.val_size": 200, "model.blocks": [1, 1, 1],
                                              "model.pool_size": 16}))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    filters = list(warnings.filters)
    study = run_search(space, tmp_path / "out", trials=2, budget=BUDGET, data=val_data)
    assert [t.user_attrs.get("rejected") for t in study.get_trials()] == ["invalid_design", "invalid_design"]
    assert not (tmp_path / "out" / "trials").exists()
    assert capsys.readouterr().err.count(": rejected untrained (invalid_design): ") == 2  # budgetnet's lines
    assert optuna.logging.get_verbosity() == optuna.logging.WARNING and warnings.filters == filters  # restored


@pytest.mark.parametrize("params, repair, blocks, channels", [
    ({"model.blocks": [2, 2, 2], "model.channels": {"low": 40, "high": 48, "step": 8}, "model.pool_size": 4}, "reject",
     [2, 2, 2], 40),
    ({"model.blocks": [2, 2, 2], "model.channels": {"choices": [48, 40]}, "model.pool_size": 4}, "fit-channels",
     [2, 2, 2], 40),
    ({"model.blocks": {"choices": [[2, 2, 2], [1, 1]]}, "model.pool_size": 4}, "fit-channels", [1, 1], 1),
])
def test_a_budget_that_no_design_fits_is_refused_before_the_first_trial(tmp_path, capsys, params, repair, blocks,
                                                                        channels):
    path = write_space(tmp_path, {**TINY_PARAMS, "data.val_size": 200, **params})
    model = load_space(path).recipe({"model.blocks": blocks, "model.channels": channels}).model
    assert (model.kernel_size, model.shortcut_kernel_size, model.pool_size, model.block) == (3, 1, 4, "basic")
    smallest, count = f"B={blocks} C_1={channels} F=3 K=1 P=4 basic", model.count_params()
    budget = 20_000 if count > 20_000 else 100
    assert count > budget
    assert main(["search", "--space", path, "--budget", str(budget), "--repair", repair, "--trials", "3",
                 "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (
        f"budgetnet search: error: --budget {budget:,}: no design of --space tiny fits; the smallest ({smallest}) "
        f"has {count:,} parameters: give --budget {count} or more, or a space of smaller designs\n")
    assert not (tmp_path / "out").exists()  # nothing written, no study created
    assert check_budget(load_space(path), count, repair) is None  # the smallest design fits its own count


def test_importing_the_search_changes_no_global_warning_or_log_filter():
    code = ("import logging, warnings, optuna, budgetnet.plots, budgetnet.training.loop; "  # theirs: their own filters
            "filters = list(warnings.filters); import budgetnet.workflows.search.worker, budgetnet.workflows.search.report; "
            "assert warnings.filters == filters, 'warning filters changed'; "
            "assert not any(logging.getLogger(n).filters for n in logging.root.manager.loggerDict "
            "if n.startswith('optuna')), 'log filters added'")
    result = subprocess.run([sys.executable, "-c", code], env=WORKER_ENV, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_repair_fits_c1_and_reports_the_trained_value(tmp_path, val_data):
    path = write_space(tmp_path, {**TINY_PARAMS, "data.val_size": 200, "model.blocks": [1, 1, 1],
                                  "model.channels": {"low": 40, "high": 48, "step": 8}, "model.pool_size": 4})
    for _ in range(2):  # a rerun continues the study
        study = run_search(load_space(path), tmp_path / "out", trials=1, budget="20k", pruner="none", data=val_data)
    trials = study.get_trials()
    assert [t.number for t in trials] == [0, 1] and all(t.state == TrialState.COMPLETE for t in trials)
    space = load_space(path)
    fitted = fit_channels(space.recipe({"model.channels": 40}).model, BUDGET)
    assert fitted < 40
    for t in trials:
        assert t.user_attrs["repaired"] == f"C_1 40..48 -> {fitted}"
        assert t.params["model.channels"] == fitted  # the sampler learns what was trained, not a value never trained
        assert t.user_attrs["design"]["channels"] == fitted and t.user_attrs["params"] <= BUDGET
        saved = yaml.safe_load((tmp_path / "out" / "trials" / str(t.number) / "recipe.yaml").read_text())
        assert saved["model"]["channels"] == fitted and saved["budget"] == BUDGET


def test_importances_count_a_c1_range_cut_by_the_budget(tmp_path):
    """Trials whose C_1 range the budget cut differently still count, as if all had drawn from the whole range."""
    rng = random.Random(0)
    cut, whole = [], []
    for _ in range(12):
        blocks, high = rng.choice([("[1,1]", 32), ("[1,1,1]", 12)])
        channels, lr = rng.randrange(4, high + 1, 4), rng.uniform(0.05, 0.3)
        value = channels / 32 + 0.01 * lr + (0.1 if blocks == "[1,1]" else 0)
        params = {"model.blocks": blocks, "model.channels": channels, "optimizer.lr": lr}
        dists = {"model.blocks": CategoricalDistribution(["[1,1]", "[1,1,1]"]),
                 "optimizer.lr": FloatDistribution(0.05, 0.3, log=True)}
        cut.append(optuna.trial.create_trial(params=params, value=value, distributions={
            **dists, "model.channels": IntDistribution(4, high, step=4)}))
        whole.append(optuna.trial.create_trial(params=params, value=value, distributions={
            **dists, "model.channels": IntDistribution(4, 32)}))
    reference = optuna.create_study(direction="maximize")
    reference.add_trials(whole)
    expected = optuna.importance.get_param_importances(reference)
    assert set(expected) == {"model.blocks", "model.channels", "optimizer.lr"}
    assert _importances("cut", cut, tmp_path / "importances.png") == pytest.approx(dict(expected))


def test_parallel_tpe_workers_lie_about_running_trials():
    assert _sampler("tpe", 0)._constant_liar and isinstance(_sampler("random", 0), optuna.samplers.RandomSampler)


def test_total_trials_is_a_target_for_the_whole_study(tmp_path, val_data):
    space = load_space(write_space(tmp_path, {**TINY_PARAMS, "epochs": 1, "data.val_size": 200}))

    def run(**kw):
        return run_search(space, tmp_path / "out", budget=BUDGET, pruner="none", data=val_data, **kw)

    assert len(run(total_trials=3).trials) == 3
    assert len(run(total_trials=3).trials) == 3  # reached: a new worker runs nothing
    assert len(run(total_trials=5, trials=1).trials) == 4  # --trials caps this worker first
    assert len(run(total_trials=5, trials=9).trials) == 5  # the study-wide target first
    with pytest.raises(RecipeError, match="--trials N .this worker. and/or --total-trials N"):
        run()
    with pytest.raises(RecipeError, match="--total-trials 0: give 1 or more"):
        run(total_trials=0)


@pytest.mark.parametrize("val_size", [None, 0, {"low": 0, "high": 100}, {"choices": [100, 0]}])
def test_a_space_without_a_validation_split_is_refused(tmp_path, val_size):
    params = TINY_PARAMS if val_size is None else {**TINY_PARAMS, "data.val_size": val_size}  # demo: val_size=0
    with pytest.raises(RecipeError, match="validation split, never on the test set"):
        load_space(write_space(tmp_path, params))


@pytest.mark.parametrize("val_size", [60_000, {"low": 200, "high": 60_000}, {"choices": [200, 50_000]}])
def test_a_validation_split_beyond_the_training_set_is_refused_with_the_space(tmp_path, val_size):
    with pytest.raises(RecipeError, match=r"data.val_size=\d+ must be between 0 and 49999"):
        load_space(write_space(tmp_path, {**TINY_PARAMS, "data.val_size": val_size}))


def test_a_trial_whose_sampled_data_section_cannot_load_fails_before_loading_data(tmp_path):
    # each value fits the base alone (val_size 0); together 49,500 training images leave too few for validation
    space = load_space(write_space(tmp_path, {**TINY_PARAMS, "model.blocks": [1, 1], "model.pool_size": 4,
                                              "data.val_size": {"low": 1000, "high": 5000},
                                              "data.train_size": {"choices": [49_500]}}))  # a valid design
    (tmp_path / "no-data").mkdir()  # loading data from here would fail with a DataError
    with pytest.raises(RecipeError, match="data.train_size=49500 must be between 1 and"):
        run_search(space, tmp_path / "out", trials=1, budget=BUDGET, data_dir=tmp_path / "no-data")


def test_two_trials_are_compared_image_by_image_on_the_validation_split():
    right_a = torch.tensor([1, 1, 0, 0, 1, 1, 1, 0, 1], dtype=torch.bool)  # 9 images: the padding bits are no image
    right_b = torch.tensor([1, 0, 1, 0, 0, 1, 1, 0, 1], dtype=torch.bool)
    a, b = (unpack_correct(pack_correct(r), 9) for r in (right_a, right_b))
    assert a.tolist() == right_a.tolist() and b.tolist() == right_b.tolist()
    difference, se = paired_difference(a, b)  # a alone right on 2 images, b alone on 1
    assert difference == pytest.approx(1 / 9) and se == pytest.approx(math.sqrt(3 - 1 / 9) / 9)
    assert paired_difference(a, a) == (0.0, 0.0)


def _trial_with_bits(value: float, right: list[int]) -> optuna.trial.FrozenTrial:
    attrs = {"recipe": {"data": {"val_size": len(right)}},
             "val_correct": pack_correct(torch.tensor(right, dtype=torch.bool))}
    return optuna.trial.create_trial(value=value, user_attrs=attrs, params={}, distributions={})


def test_trials_the_validation_split_cannot_tell_from_the_best_are_its_ties():
    best = _trial_with_bits(0.9, [1] * 90 + [0] * 10)
    close = _trial_with_bits(0.89, [1] * 89 + [0] * 11)  # 1 image apart: s.e. 1 point
    far = _trial_with_bits(0.5, [1] * 50 + [0] * 50)  # 40 images apart, all one way: s.e. 4.9 points
    other_split = _trial_with_bits(0.89, [1] * 89 + [0] * 12)  # 101 images
    for number, t in enumerate((best, close, far, other_split)):
        t.number = number
    versus = versus_best([best, close, far, other_split])
    assert versus[0] == (0.0, 0.0) and 3 not in versus  # another split: not paired
    assert versus[1][0] == pytest.approx(-0.01) and versus[1][1] == pytest.approx(math.sqrt(1 - 1 / 100) / 100)
    assert -versus[1][0] <= TIE * versus[1][1] and -versus[2][0] > TIE * versus[2][1]


def test_pareto_front():
    points = [(100, 0.5), (50, 0.4), (200, 0.45), (50, 0.3), (300, 0.7), (10, 0.1)]
    assert pareto_front(points) == [5, 1, 0, 4]
    assert pareto_front([]) == []


def test_cli_user_errors(tmp_path, capsys):
    assert main(["search", "--space", "no-such-space", "--trials", "1", "--out", str(tmp_path)]) == 2
    assert "budgetnet search: error: space 'no-such-space'" in capsys.readouterr().err
    assert main(["search", "--space", "tiny", "--out", str(tmp_path)]) == 2
    assert "--trials N (this worker) and/or --total-trials N (the whole study)" in capsys.readouterr().err
    optuna.create_study(storage=f"sqlite:///{tmp_path / 'search.db'}", study_name="a")
    assert main(["search-report", "--out", str(tmp_path), "--study", "b"]) == 2
    assert "has no study 'b'; it holds: a" in capsys.readouterr().err


def test_storage_comes_from_the_environment_and_passwords_stay_hidden(tmp_path, monkeypatch, capsys):
    assert storage_url(tmp_path) == f"sqlite:///{tmp_path.resolve() / 'search.db'}"
    url = "postgresql+psycopg2://search:s3cret@db.example:5432/studies"
    monkeypatch.setenv("BUDGETNET_STORAGE", url)
    assert storage_url(tmp_path) == url and storage_url(tmp_path, "sqlite:///x.db") == "sqlite:///x.db"
    assert shown_url(url) == "postgresql+psycopg2://search:***@db.example:5432/studies"
    monkeypatch.setenv("BUDGETNET_STORAGE", f"sqlite:///{tmp_path / 'env.db'}")
    optuna.create_study(storage=f"sqlite:///{tmp_path / 'env.db'}", study_name="from-env")
    assert main(["search-report", "--out", str(tmp_path / "report")]) == 0  # the study of $BUDGETNET_STORAGE
    assert "0 trials" in capsys.readouterr().out
    study = optuna.load_study(study_name="from-env", storage=f"sqlite:///{tmp_path / 'env.db'}")
    assert "s3cret" not in worker_summary(study, tmp_path, url) and "--storage" not in worker_summary(study, "o", None)


def test_each_worker_on_a_machine_claims_its_own_gpu(tmp_path, monkeypatch):
    """Four faked GPUs: workers take them in order, a fifth is refused, and a lock dies with its holder."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace(uuid=f"GPU-{i}-uuid"))
    claims = [worker_device("auto", tmp_path) for _ in range(4)]
    assert [device for device, _ in claims] == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    with pytest.raises(SearchError, match="all 4 GPUs of this machine already have a budgetnet search worker"):
        worker_device("auto", tmp_path)
    claims[2][1].close()  # that worker ended: its GPU is free again
    assert worker_device("auto", tmp_path)[0] == "cuda:2"
    assert worker_device("cpu", tmp_path) == ("cpu", None)  # an explicit device is kept, never locked
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert worker_device("auto", tmp_path) == ("cpu", None)


def test_a_gpu_held_by_another_process_is_skipped(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys; from budgetnet.workflows.search.gpu import claim_gpu; "
                               f"i, lock = claim_gpu(['GPU-a', 'GPU-b'], {str(tmp_path)!r}); print(i, flush=True); "
                               "sys.stdin.read()"], env=WORKER_ENV, text=True, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE)
    assert holder.stdout.readline().strip() == "0"
    index, lock = claim_gpu(["GPU-a", "GPU-b"], tmp_path)
    assert index == 1
    lock.close()
    holder.communicate("")  # the holder ends ...
    assert claim_gpu(["GPU-a", "GPU-b"], tmp_path)[0] == 0  # ... and so does its claim


def test_a_sigterm_inside_the_storage_commit_stops_the_search_at_the_next_safe_point(tmp_path, val_data,
                                                                                     monkeypatch):
    """SIGTERM delivered inside Optuna's database commit of a finished trial: the commit completes and the
    trial is recorded, the worker stops before the next trial, and a rerun finishes the study."""
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    from budgetnet.workflows.search.objective import Objective

    space = load_space(disk_space(tmp_path, epochs=2, train_size=300, **{"model.pool_size": 4}))
    call, armed, delivered = Objective.__call__, [], []

    def train_then_arm(self, trial):  # Optuna's next commit after this stores the trial's result
        value = call(self, trial)
        armed.append(True)
        return value

    def signal_in_commit(session):  # SQLAlchemy's own hook inside the commit, before the database commits
        if armed and not delivered:
            delivered.append(True)
            signal.raise_signal(signal.SIGTERM)  # the handler runs here, inside the commit

    monkeypatch.setattr(Objective, "__call__", train_then_arm)
    before = [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)]
    event.listen(Session, "before_commit", signal_in_commit)
    try:
        with pytest.raises(Interrupted) as stopped:
            run_search(space, tmp_path / "out", trials=2, budget=BUDGET, pruner="none", data=val_data)
    finally:
        event.remove(Session, "before_commit", signal_in_commit)
    assert delivered and stopped.value.signum == signal.SIGTERM
    assert "interrupted between trials" in str(stopped.value)
    assert [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)] == before  # handlers restored
    trials = load_study(storage_url(tmp_path / "out")).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE]  # recorded whole, nothing left RUNNING
    monkeypatch.undo()
    study = run_search(space, tmp_path / "out", trials=1, budget=BUDGET, pruner="none", data=val_data)
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE] * 2


# ---- many workers, preemption -------------------------------------------------------------------------

class Worker:
    """`budgetnet search` as a separate process, as on another machine; its stderr lines arrive on a queue."""

    def __init__(self, space: str, out, data, *extra: str, storage: str | None = None):
        env = {**WORKER_ENV, **({"BUDGETNET_STORAGE": storage} if storage else {})}  # as docs/search.md advises
        self.proc = subprocess.Popen([sys.executable, "-m", "budgetnet", "search", "--space", space, "--out", str(out),
                                      "--budget", str(BUDGET), "--data", str(data), *extra],
                                     env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines, self.err = queue.Queue(), []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.err.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, pattern: str, timeout: float = 300) -> None:
        """Block until a stderr line matches (the worker prints an epoch's line once its checkpoint is written)."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            assert line is not None, f"the worker ended before {pattern!r}: {''.join(self.err)[-3000:]}"
            if re.search(pattern, line):
                return

    def finish(self, timeout: float = 600) -> tuple[int, str]:
        """The exit code and the whole stderr, once the worker has ended."""
        self.proc.stdout.read()
        self.proc.wait(timeout)
        self.reader.join(timeout)
        return self.proc.returncode, "".join(self.err)


def disk_space(tmp_path, epochs: int, train_size: int, **params) -> str:
    return write_space(tmp_path, {**TINY_PARAMS, "epochs": epochs, "data.train_size": train_size,
                                  "data.val_size": 200, "data.test_size": 200, **params})


def check_resumed(study, victim: int, out, first_row: str) -> None:
    """The failed trial was queued again and the retry finished its run directory from the checkpoint."""
    trials = study.get_trials()
    assert trials[victim].state == TrialState.FAIL
    retry = [t for t in trials if t.number > victim and t.user_attrs.get("run_dir") == f"trials/{victim}"]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE and retry[0].params == trials[victim].params
    rows = (out / "trials" / str(victim) / "metrics.jsonl").read_text().splitlines()
    assert rows[0] == first_row  # epoch 1 was not trained again (its timing would differ) ...
    assert [json.loads(r)["epoch"] for r in rows] == list(range(1, 7))  # ... and every epoch is there once
    assert retry[0].value == max(json.loads(r)["val_acc"] for r in rows)
    assert sorted(retry[0].intermediate_values) == list(range(1, 7))  # the pruner sees the whole curve


@pytest.mark.slow
def test_sigterm_fails_the_trial_at_once_and_a_rerun_resumes_it(tmp_path, fake_cifar):
    space, out = disk_space(tmp_path, epochs=6, train_size=1000, **{"model.pool_size": 4}), tmp_path / "out"
    worker = Worker(space, out, fake_cifar, "--trials", "3", "--pruner", "none")
    worker.wait_for(r"^epoch 1/6 \| lr")  # the epoch line, printed once its checkpoint is written
    worker.proc.send_signal(signal.SIGTERM)  # what SLURM preemption, docker stop and Kubernetes send
    code, err = worker.finish()
    assert code == 128 + signal.SIGTERM, err[-3000:]
    study = load_study(storage_url(out))
    failed = [t for t in study.get_trials() if t.state == TrialState.FAIL]
    assert len(failed) == 1 and not any(t.state == TrialState.RUNNING for t in study.get_trials())  # at once
    victim = failed[0].number
    assert f"interrupted: trial {victim} is marked failed and queued again" in err
    waiting = [t for t in study.get_trials() if t.state == TrialState.WAITING]
    assert len(waiting) == 1 and waiting[0].user_attrs["run_dir"] == f"trials/{victim}"
    first_row = (out / "trials" / str(victim) / "metrics.jsonl").read_text().splitlines()[0]

    code, err = Worker(space, out, fake_cifar, "--trials", "1", "--pruner", "none", "--quiet").finish()
    assert code == 0, err[-3000:]
    check_resumed(load_study(storage_url(out)), victim, out, first_row)


@pytest.mark.slow
def test_workers_on_postgres_share_a_total_target_and_record_every_trial_once(tmp_path, fake_cifar,
                                                                              postgres_url):
    space, total = disk_space(tmp_path, epochs=2, train_size=300), 8
    workers = [Worker(space, tmp_path / f"w{i}", fake_cifar, "--total-trials", str(total), "--study", "three",
                      "--quiet", storage=postgres_url) for i in range(3)]
    for w in workers:
        code, err = w.finish()
        assert code == 0, err[-3000:]
    trials = load_study(postgres_url, "three").get_trials()
    # each worker stops once the study holds `total` trials finished or running: only two workers asking for
    # a trial in the same instant can pass the target, each by one
    assert total <= len(trials) <= total + 2
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    trained = [t for t in trials if "rejected" not in t.user_attrs]
    assert sorted(t.user_attrs["run_dir"] for t in trained) == sorted(f"trials/{t.number}" for t in trained)
    for t in trained:  # one run directory per trial, in the folder of the worker that trained it
        assert sum((tmp_path / f"w{i}" / t.user_attrs["run_dir"] / "summary.json").is_file() for i in range(3)) == 1
    report = search_report(postgres_url, tmp_path / "report", "three")
    assert report["counts"]["trials"] == len(trials) and (tmp_path / "report" / "search.md").is_file()


@pytest.mark.slow
def test_killed_worker_trial_is_failed_and_resumed_by_the_next_worker(tmp_path, fake_cifar,
                                                                      postgres_url):
    space, out = disk_space(tmp_path, epochs=6, train_size=1000, **{"model.pool_size": 4}), tmp_path / "shared"
    tight = ["--study", "killed", "--storage", postgres_url, "--heartbeat", "1", "--pruner", "none"]
    worker = Worker(space, out, fake_cifar, "--trials", "5", *tight)
    worker.wait_for(r"^epoch 1/6 \| lr")  # the epoch line, printed once its checkpoint is written
    worker.proc.send_signal(signal.SIGKILL)  # no handler runs: only the missing heartbeats tell
    worker.finish()
    running = [t for t in load_study(postgres_url, "killed").get_trials() if t.state == TrialState.RUNNING]
    assert len(running) == 1  # until the grace period (two heartbeats) has passed
    victim = running[0].number
    first_row = (out / "trials" / str(victim) / "metrics.jsonl").read_text().splitlines()[0]
    time.sleep(3)  # the grace period itself: a trial is stale once its worker has been silent for 2 s

    code, err = Worker(space, out, fake_cifar, "--trials", "1", "--quiet", *tight).finish()
    assert code == 0, err[-3000:]
    assert f"trial {victim} stopped sending heartbeats" in err
    check_resumed(load_study(postgres_url, "killed"), victim, out, first_row)
    assert search_report(postgres_url, tmp_path / "report", "killed")["counts"]["failed"] == 1


# ---- compute ---------------------------------------------------------------------------------------------

COMPUTE_PARAMS = {**TINY_PARAMS, "data.val_size": 200, "model.pool_size": 4}  # every design valid


def gflops(space, values: dict) -> float:
    return space.recipe(values).model.gflop_per_image()


def test_a_compute_budget_trains_only_designs_within_it_and_records_what_each_spent(tmp_path, val_data):
    path = write_space(tmp_path, {**COMPUTE_PARAMS, "model.channels": {"low": 8, "high": 32, "step": 4}})
    space = load_space(path)
    limit, budget = 0.016, 50_000  # B=[1,1] fits the compute up to C_1 8; B=[1,1,1] fits the parameters at C_1 8 only
    assert gflops(space, {"model.blocks": [1, 1], "model.channels": 8}) <= limit
    assert gflops(space, {"model.blocks": [1, 1], "model.channels": 12}) > limit
    assert gflops(space, {"model.blocks": [1, 1, 1], "model.channels": 8}) > limit
    assert space.recipe({"model.blocks": [1, 1, 1], "model.channels": 8}).model.count_params() <= budget
    study = run_search(space, tmp_path / "out", trials=6, budget=budget, sampler="random", pruner="none",
                       repair="reject", seed=1, data=val_data, max_gflops=limit)
    assert study.user_attrs["max_gflops"] == limit
    trials = study.get_trials()
    outcomes = [t.user_attrs.get("rejected", t.state.name) for t in trials]
    assert "COMPLETE" in outcomes and "over_budget" in outcomes
    for t in trials:
        run_dir = tmp_path / "out" / "trials" / str(t.number)
        if "rejected" in t.user_attrs:  # refused before any data was loaded: no run directory
            assert not run_dir.exists() and "GFLOP per image > max_gflops" in t.user_attrs["reason"]
            continue
        a = t.user_attrs
        values = {k: json.loads(v) if isinstance(v, str) else v for k, v in t.params.items()}
        assert a["gflop_per_image"] == pytest.approx(gflops(space, values)) and a["gflop_per_image"] <= limit
        assert t.distributions["model.channels"].high <= 8  # the C_1 range is cut at the widest within the compute
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["train_images"] == 2 * 300  # 2 epochs of 300 images
        assert summary["gflop_per_image"] == a["gflop_per_image"] and summary["params"] == a["params"]
        assert a["train_pflop"] == summary["train_pflop"] == pytest.approx(a["gflop_per_image"] * 600 / 1e6)
        assert a["train_seconds"] == summary["train_seconds"] > 0

    report = search_report(f"sqlite:///{tmp_path / 'out' / 'search.db'}", tmp_path / "report")
    done = {t.number: t for t in trials if t.state == TrialState.COMPLETE}
    for key, front in (("train_pflop", report["pflop_front"]), ("params", report["front"])):
        assert front and set(front) <= set(done)
        for n in front:  # nothing beats a front point on both axes
            assert not any(t.user_attrs[key] <= done[n].user_attrs[key] and t.value > done[n].value
                           for t in done.values())
    md = (tmp_path / "report" / "search.md").read_text()
    assert "### Front of training PFLOP" in md and "### Front of parameters" in md
    assert f"max {limit:g} GFLOP per image" in md
    best = done[report["pflop_front"][-1]]
    row = (f"| {best.number} | blocks={best.params['model.blocks']}, channels={best.params['model.channels']} | "
           f"{best.user_attrs['params']:,} | {best.user_attrs['gflop_per_image']:.4g} | "
           f"{best.user_attrs['train_pflop']:.4g} | {best.user_attrs['train_seconds']:.0f} | {best.value:.4f} |")
    assert row in md
    assert (tmp_path / "report" / "pareto.png").stat().st_size > 10_000


def test_a_compute_budget_that_no_design_fits_is_refused_before_the_first_trial(tmp_path, capsys):
    path = write_space(tmp_path, {**COMPUTE_PARAMS, "max_gflops": 1e-6})  # a space file's own compute budget
    smallest = load_space(path).recipe({"model.blocks": [1, 1], "model.channels": 1}).model.gflop_per_image()
    assert main(["search", "--space", path, "--budget", "20k", "--trials", "3", "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (
        "budgetnet search: error: the space's max_gflops of 1e-06: no design of --space tiny within 20,000 parameters "
        f"fits; the cheapest (B=[1, 1] C_1=1 F=3 K=1 P=4 basic) needs {smallest:.4f} GFLOP per image: give "
        f"--max-gflops {math.ceil(smallest * 1e4) / 1e4:g} or more, or a space of smaller designs\n")
    assert main(["search", "--space", path, "--max-gflops", "1", "--trials", "3", "--dry-run",
                 "--out", str(tmp_path / "out")]) == 0  # --max-gflops overrides the space's
    assert not (tmp_path / "out").exists()  # nothing written, no study created


def test_dry_run_times_the_smallest_and_largest_admitted_designs_and_writes_nothing(tmp_path, capsys, monkeypatch):
    from budgetnet.workflows.search import cost

    path = write_space(tmp_path, COMPUTE_PARAMS)
    space = load_space(path)
    limit = 0.02  # B=[1,1] within it up to C_1 8 (12 is within the parameters); B=[1,1,1] within 20k at C_1 4
    assert gflops(space, {"model.blocks": [1, 1], "model.channels": 8}) <= limit
    assert gflops(space, {"model.blocks": [1, 1], "model.channels": 12}) > limit
    timed = []
    monkeypatch.setattr(cost, "measure_epoch_seconds", lambda recipe, steps: timed.append(recipe) or 10.0 * len(timed))
    assert main(["search", "--space", path, "--dry-run", "--total-trials", "5", "--budget", "20k",
                 "--max-gflops", str(limit), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert not (tmp_path / "out").exists() and not (tmp_path / "search.db").exists()
    smallest, largest = (r.model for r in timed)
    assert (smallest.blocks, smallest.channels) == ([1, 1], 4)  # the space's narrowest
    assert (largest.blocks, largest.channels) == ([1, 1], 8)  # the widest within both budgets
    assert "5 trials of up to 2 epochs" in out and "every combination of its model keys (2)" in out
    assert f"{smallest.gflop_per_image():.4f} GFLOP/image" in out and "10.0 s/epoch" in out and "20.0 s/epoch" in out
    assert "total 1.7 min to 3.3 min of training" in out  # 5 trials x 2 epochs x 10 s .. 20 s


STAGE_WIDTHS = {**COMPUTE_PARAMS, "epochs": 1, "model.blocks": [1, 1], "model.channels": [8, 16],
                "model.channels.0": {"low": 4, "high": 32, "step": 4},
                "model.channels.1": {"low": 8, "high": 64, "step": 8}}


def test_per_stage_widths_are_sampled_within_the_budget_so_no_draw_is_lost(tmp_path, val_data):
    path = write_space(tmp_path, STAGE_WIDTHS)
    space = load_space(path)
    params = lambda c: space.recipe({"model.channels": c}).model.count_params()  # noqa: E731
    assert params([4, 8]) <= BUDGET < params([32, 64]) and params([4, 64]) > BUDGET  # the top of either range is over
    study = run_search(space, tmp_path / "out", trials=8, budget=BUDGET, sampler="random", pruner="none", seed=0,
                       data=val_data)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 8  # none rejected over the budget
    cut = 0
    for t in trials:
        trained = yaml.safe_load((tmp_path / "out" / "trials" / str(t.number) / "recipe.yaml").read_text())
        widths = [t.params["model.channels.0"], t.params["model.channels.1"]]
        assert trained["model"]["channels"] == widths == t.user_attrs["design"]["channels"]  # recorded = trained
        assert t.user_attrs["params"] == params(widths) <= BUDGET
        high = t.distributions["model.channels.1"].high  # cut at the widest that fits after the first stage's draw
        assert high == 64 or params([widths[0], high + 8]) > BUDGET
        assert params([widths[0], high]) <= BUDGET
        cut += high < 64
    assert cut  # the budget cut some trial's range


@pytest.mark.parametrize("repair", ["fit-channels", "reject"])
def test_per_stage_widths_whose_low_ends_are_over_are_scaled_together_or_rejected(tmp_path, val_data, repair):
    path = write_space(tmp_path, {**STAGE_WIDTHS, "model.channels.0": {"low": 40, "high": 48, "step": 4}})
    space = load_space(path)
    lows = space.recipe({"model.channels": [40, 8]}).model
    assert lows.count_params() > BUDGET
    if repair == "reject":  # no design of the space fits: refused before the first trial
        with pytest.raises(RecipeError, match=r"the smallest \(B=\[1, 1\] C_1=\[40, 8\] "):
            run_search(space, tmp_path / "out", trials=1, budget=BUDGET, repair=repair, data=val_data)
        assert not (tmp_path / "out").exists()
        return
    study = run_search(space, tmp_path / "out", trials=1, budget=BUDGET, pruner="none", repair=repair, data=val_data)
    t = study.get_trials()[0]
    fitted = fit_channels(lows, BUDGET)
    assert t.state == TrialState.COMPLETE and t.user_attrs["repaired"] == f"C_1 [40, 8] -> {fitted}"
    assert [t.params["model.channels.0"], t.params["model.channels.1"]] == fitted == t.user_attrs["design"]["channels"]


def test_the_pruner_stops_no_trial_before_the_spaces_first_pruning_epoch_nor_after_its_last(tmp_path, val_data):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({"base": "demo", "prune_from_epoch": 2, "params": {
        **TINY_PARAMS, "data.val_size": 200, "model.pool_size": 4, "model.blocks": [1, 1], "epochs": 2}}))
    study = run_search(load_space(path), tmp_path / "out", trials=8, budget=BUDGET, sampler="random",
                       pruner="median", seed=0, data=val_data)
    # the median pruner would stop trials below the median after epoch 1, and after epoch 2 once 5 have finished
    values = [t.value for t in study.get_trials()]
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE] * 8 and len(set(values)) > 1


@pytest.mark.parametrize("start", [0, 1.5, "2", True])
def test_a_first_pruning_epoch_that_is_not_a_whole_number_of_epochs_is_refused(tmp_path, start):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({"base": "demo", "prune_from_epoch": start, "params": {"data.val_size": 100}}))
    with pytest.raises(RecipeError, match="prune_from_epoch must be a whole number of epochs, 1 or more"):
        load_space(path)


def test_values_sampled_again_return_the_earlier_trials_accuracy_untrained(tmp_path, val_data, capsys):
    path = write_space(tmp_path, {**COMPUTE_PARAMS, "epochs": 1, "model.blocks": {"choices": [[1, 1]]},
                                  "model.pool_size": {"choices": [4]}, "model.channels": 8, "optimizer.lr": 0.1})
    study = run_search(load_space(path), tmp_path / "out", trials=3, budget=BUDGET, pruner="none", seed=0,
                       data=val_data)
    first, *again = study.get_trials()
    assert all(t.state == TrialState.COMPLETE and t.params == first.params for t in study.get_trials())
    assert "duplicate_of" not in first.user_attrs and (tmp_path / "out" / "trials" / "0").is_dir()
    for t in again:
        assert t.user_attrs["duplicate_of"] == 0 and t.value == first.value
        assert not (tmp_path / "out" / "trials" / str(t.number)).exists()  # not trained again
    assert capsys.readouterr().err.count(f"trial 0's values again: its val acc {first.value:.4f}") == 2
    report = search_report(f"sqlite:///{tmp_path / 'out' / 'search.db'}", tmp_path / "report")
    assert (report["counts"]["complete"], report["counts"]["duplicate"]) == (1, 2)
    assert report["front"] == report["pflop_front"] == [0] and report["best"]["trial"] == 0
