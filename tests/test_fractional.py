"""Fractional training length: `epochs` (and model.whiten_bias_epochs) may be a fraction; the last epoch,
ceil(epochs), stops part-way, and checkpoints, resume, evaluation and the schedule follow."""
import pytest
import torch

from budgetnet.config import RecipeError, ScheduleConfig
from budgetnet.data.cifar import run_steps, steps_in
from budgetnet.design.spec import SpecError
from budgetnet.training import checkpoint, loop
from budgetnet.training.loop import train
from budgetnet.training.optim import lr_at_step
from budgetnet.training.rundir import RunFiles
from conftest import Crash, crash_after, tiny_recipe

STEPS = 512 // 64  # tiny_data's steps per epoch at tiny_recipe's batch 64


def test_run_steps_round_the_last_epoch_up_to_a_whole_step():
    assert run_steps(3, 8) == 24 and run_steps(3.0, 8) == 24  # whole numbers: every batch of every epoch
    assert run_steps(2.5, 8) == 20
    assert run_steps(9.9, 25) == 248  # airbench94: ceil(9.9 x 25 batches of 2,000)
    assert run_steps(7.59, 32) == 243  # hiverge: ceil(7.59 x 32 batches of 1,536)
    assert run_steps(1.1, 10) == 11  # 1.1 * 10 is 11.000000000000002 in floats: no extra step
    assert run_steps(2.01, 8) == 17  # 0.08 of a step rounds up to one
    assert run_steps(2.0000000001, 8) == 17  # the last epoch, epoch 3, always takes a step
    assert run_steps(0.01, 8) == 1
    assert (steps_in(0, 8), steps_in(0.5, 8), steps_in(1.5, 8)) == (0, 4, 12)


@pytest.mark.parametrize("cfg, end", [
    (ScheduleConfig(name="cosine", eta_min=0.01), 0.01),
    (ScheduleConfig(name="triangle", pct_start=0.23, start_factor=0.2, end_factor=0.07), 0.07),
    (ScheduleConfig(name="triangle", end_factor=0.07, per_step=False), 0.07),
    (ScheduleConfig(name="cosine", eta_min=0.01, warmup_epochs=0.3, per_step=False), 0.01),
])
def test_the_schedule_reaches_its_end_at_the_last_step_of_a_fractional_run(cfg, end):
    total = run_steps(2.5, STEPS)
    lrs = [lr_at_step(cfg, 1.0, step, total, STEPS) for step in range(total + 1)]
    assert lrs[-1] == pytest.approx(end, abs=1e-12)
    assert lrs[-2] != pytest.approx(end, abs=1e-6)  # not before
    if not cfg.per_step:  # the partial epoch trains at the rate of the epochs finished, 2
        assert lrs[2 * STEPS:-1] == [lr_at_step(cfg, 1.0, 2 * STEPS, total, STEPS)] * (total - 2 * STEPS)


def test_a_fractional_run_trains_its_steps_and_evaluates_tests_and_checkpoints_its_partial_last_epoch(
        tiny_data, tmp_path):
    recipe = tiny_recipe("epochs=2.5", "eval_every=2", "test_every=2", "checkpoint_every=2", "schedule.name=triangle",
                         "schedule.end_factor=0.07")
    summary = train(recipe, tmp_path / "run", data=tiny_data, progress=False)
    rows = RunFiles(tmp_path / "run").read_metrics()
    assert [r.epoch for r in rows] == [1, 2, 3]
    assert [r.images_per_s * r.seconds for r in rows] == pytest.approx([512, 512, 256])  # 4 of 8 batches
    assert rows[0].test_acc is None and None not in (rows[2].test_acc, rows[2].plain_test_acc)  # the last is evaluated
    assert rows[2].lr == pytest.approx(0.07 * recipe.optimizer.lr)  # the schedule's end, at step 20
    last = checkpoint.load(tmp_path / "run" / "checkpoints" / "last.pt")
    assert (last["epoch"], last["scheduler"]["last_epoch"]) == (3, 20)
    assert (summary.status, summary.epochs, summary.epochs_done) == ("finished", 2.5, 3)
    assert summary.final_test_acc == rows[2].test_acc
    assert "epochs: 2.5" in (tmp_path / "run" / "recipe.yaml").read_text()


def test_a_fractional_run_interrupted_after_epoch_1_resumes_to_the_same_weights(tiny_data, tmp_path):
    """The whitening bias (trained 1.5 epochs), lookahead's annealing, the EMA and the schedule all count the steps
    of the partial last epoch; the resumed run must take the same ones."""
    recipe = tiny_recipe("epochs=2.5", "model.stem=whiten", "model.whiten_bias_epochs=1.5", "ema.enabled=true",
                         "ema.every=3", "lookahead.enabled=true", "lookahead.anneal=true", "schedule.name=triangle",
                         "optimizer.decoupled_weight_decay=true")
    train(recipe, tmp_path / "full", data=tiny_data, progress=False)
    killed = RunFiles(tmp_path / "killed")
    with pytest.raises(Crash):
        train(recipe, killed.root, data=tiny_data, progress=False, on_epoch=crash_after(1))
    after_one = checkpoint.load(killed.last)
    assert (after_one["epoch"], after_one["scheduler"]["last_epoch"]) == (1, STEPS)
    summary = train(None, killed.root, data=tiny_data, progress=False, resume=True)
    assert (summary.status, [r.epoch for r in killed.read_metrics()]) == ("finished", [1, 2, 3])
    full, resumed = checkpoint.load(tmp_path / "full" / "checkpoints" / "last.pt"), checkpoint.load(killed.last)
    assert full["scheduler"]["last_epoch"] == resumed["scheduler"]["last_epoch"] == 20
    for part in ("model", "train_model"):  # the EMA's weights and the trained ones
        for key, value in full[part].items():
            assert torch.equal(value, resumed[part][key]), (part, key)
        assert not torch.equal(full[part]["fc.weight"], after_one[part]["fc.weight"])  # it trained after epoch 1


def test_the_whitening_bias_freezes_part_way_through_an_epoch(tiny_data, monkeypatch):
    trains = []
    step = loop._optimizer_step

    def recording(state, loss, recipe):
        trains.append(state.model.stem.bias.requires_grad)
        step(state, loss, recipe)

    monkeypatch.setattr(loop, "_optimizer_step", recording)
    loop.train_without_rundir(tiny_recipe("epochs=1.5", "model.stem=whiten", "model.whiten_bias_epochs=0.5"),
                              data=tiny_data)
    assert trains == [True] * 4 + [False] * 8


@pytest.mark.parametrize("override, error, message", [
    ("epochs=0", RecipeError, "epochs=0 must be > 0"),
    ("epochs=-2.5", RecipeError, "epochs=-2.5 must be > 0"),
    ("epochs=.inf", RecipeError, "epochs=inf is not a finite number"),
    ("epochs=.nan", RecipeError, "epochs=nan is not a finite number"),
    ("model.whiten_bias_epochs=-0.5", SpecError, "model.whiten_bias_epochs=-0.5 must be 0 or more"),
    ("model.whiten_bias_epochs=.inf", (SpecError, RecipeError), "model.whiten_bias_epochs=inf (must be at most|is no)"),
])
def test_a_length_that_cannot_run_is_one_clear_line_before_anything_is_written(tiny_data, tmp_path, override, error,
                                                                              message):
    with pytest.raises(error, match=message):
        train(tiny_recipe("model.stem=whiten", override), tmp_path / "run", data=tiny_data, progress=False)
    assert not (tmp_path / "run").exists()
