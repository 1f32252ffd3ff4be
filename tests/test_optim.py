"""Optimizer and schedule factories: names, and every schedule against its equation."""
import math

import pytest
import torch

from budgetnet.config import OptimizerConfig, ScheduleConfig
from budgetnet.optim import build_optimizer, build_scheduler, check_schedule, lr_at, lr_at_step


def study_cosine(t_cur, t_i, eta_min, eta_max):
    """The study's equation: eta_t = eta_min + 1/2 (eta_max - eta_min) (1 + cos(pi T_cur / T_i))."""
    return eta_min + 0.5 * (eta_max - eta_min) * (1 + math.cos(math.pi * t_cur / t_i))


def test_cosine_follows_the_equation():
    cfg = ScheduleConfig(name="cosine", eta_min=0.001)
    for t in [0, 0.5, 7, 13.25, 20]:
        assert lr_at(cfg, 0.1, t, 20) == pytest.approx(study_cosine(t, 20, 0.001, 0.1))


def test_warm_restarts_restart_at_t0_and_grow_by_t_mult():
    cfg = ScheduleConfig(name="warm_restarts", T_0=10, T_mult=2, eta_min=0.0)
    # cycles: [0, 10), [10, 30), [30, 70)
    for t, (t_cur, t_i) in {0: (0, 10), 5: (5, 10), 10: (0, 20), 25: (15, 20), 30: (0, 40), 69: (39, 40)}.items():
        assert lr_at(cfg, 0.1, t, 100) == pytest.approx(study_cosine(t_cur, t_i, 0.0, 0.1))
    assert lr_at(cfg, 0.1, 10, 100) == pytest.approx(0.1)  # a restart returns to eta_max


def test_step_triangle_constant_and_warmup():
    step = ScheduleConfig(name="step", milestones=[0.5, 0.75], gamma=0.1)
    assert [lr_at(step, 1.0, t, 100) for t in (0, 49, 50, 74, 75)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])
    one = ScheduleConfig(name="triangle", pct_start=0.25)
    assert lr_at(one, 1.0, 0, 8) == pytest.approx(1 / 25)
    assert lr_at(one, 1.0, 2, 8) == pytest.approx(1.0)
    assert lr_at(one, 1.0, 5, 8) == pytest.approx(0.5)
    assert lr_at(one, 1.0, 8, 8) == pytest.approx(0.0)
    warm = ScheduleConfig(name="constant", warmup_epochs=2)
    assert [lr_at(warm, 0.4, t, 10) for t in (0, 1, 2, 5)] == pytest.approx([0, 0.2, 0.4, 0.4])


def test_onecycle_is_still_read_as_the_triangle_and_airbench_factors_set_its_ends():
    old, new = ScheduleConfig(name="onecycle", pct_start=0.2), ScheduleConfig(name="triangle", pct_start=0.2)
    check_schedule(old)
    assert [lr_at(old, 0.4, t, 10) for t in (0, 1, 2, 6, 10)] == [lr_at(new, 0.4, t, 10) for t in (0, 1, 2, 6, 10)]
    airbench = ScheduleConfig(name="triangle", pct_start=0.23, start_factor=0.2, end_factor=0.07)
    assert [lr_at(airbench, 1.0, t, 100) for t in (0, 23, 100)] == pytest.approx([0.2, 1.0, 0.07])
    assert lr_at(airbench, 1.0, 61.5, 100) == pytest.approx((1 + 0.07) / 2)
    with pytest.raises(ValueError, match="schedule.start_factor=1.5"):
        check_schedule(ScheduleConfig(name="triangle", start_factor=1.5))


def test_schedule_sets_the_rates_torchs_lambdalr_would_and_resumes_from_its_step():
    cfg = ScheduleConfig(name="triangle", pct_start=0.3)
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    ours = build_optimizer(model, OptimizerConfig(lr=0.3, norm_lr_scale=4.0))
    theirs = build_optimizer(model, OptimizerConfig(lr=0.3, norm_lr_scale=4.0))
    sched = build_scheduler(ours, cfg, epochs=3, steps_per_epoch=5)
    factor = lambda step: lr_at_step(cfg, 0.3, step, 3, 5) / 0.3  # noqa: E731  the old LambdaLR
    reference = torch.optim.lr_scheduler.LambdaLR(theirs, factor)
    for _ in range(7):
        assert [g["lr"] for g in ours.param_groups] == [g["lr"] for g in theirs.param_groups]  # bit for bit
        sched.step()
        theirs.step()
        reference.step()
    again = build_optimizer(model, OptimizerConfig(lr=0.3, norm_lr_scale=4.0))
    resumed = build_scheduler(again, cfg, epochs=3, steps_per_epoch=5)
    resumed.load_state_dict(sched.state_dict())
    assert resumed.get_last_lr() == sched.get_last_lr() == reference.get_last_lr()


def lrs_driven(cfg, base_lr, epochs, steps_per_epoch):
    """The learning rate the optimizer sees at each step of a run driven by build_scheduler."""
    opt = build_optimizer(torch.nn.Linear(2, 2), OptimizerConfig(name="sgd", lr=base_lr))
    sched = build_scheduler(opt, cfg, epochs=epochs, steps_per_epoch=steps_per_epoch)
    seen = []
    for _ in range(epochs * steps_per_epoch):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return seen


def test_scheduler_follows_the_warm_restart_equation_step_by_step():
    # T_0 = 1 epoch of 4 steps, T_mult = 2: cycles of 4 and 8 steps, a restart to 0.1 at step 4
    cfg = ScheduleConfig(name="warm_restarts", T_0=1, T_mult=2, eta_min=0.01)
    by_hand = [study_cosine(s, 4, 0.01, 0.1) for s in range(4)] + [study_cosine(s, 8, 0.01, 0.1) for s in range(8)]
    assert lrs_driven(cfg, 0.1, 3, 4) == pytest.approx(by_hand)
    assert lrs_driven(cfg, 0.1, 3, 4)[4] == pytest.approx(0.1)


def test_per_epoch_schedule_is_constant_within_an_epoch():
    cfg = ScheduleConfig(name="cosine", per_step=False)
    curve = lrs_driven(cfg, 0.1, 4, 5)
    assert curve == pytest.approx([study_cosine(e, 4, 0.0, 0.1) for e in range(4) for _ in range(5)])


@pytest.mark.parametrize("milestones", [[2], [0.5, 1.0], [0.0]])
def test_a_milestone_outside_the_run_is_refused(milestones):
    with pytest.raises(ValueError, match="fractions of the run"):
        check_schedule(ScheduleConfig(name="step", milestones=milestones))


def test_warmup_ramps_into_the_running_schedule():
    # documented: the schedule keeps running under the warm-up, its lr multiplied by t / warmup_epochs
    cfg = ScheduleConfig(name="cosine", warmup_epochs=2)
    for t in (0.5, 1, 1.5, 3):
        assert lr_at(cfg, 0.1, t, 10) == pytest.approx(study_cosine(t, 10, 0.0, 0.1) * min(1.0, t / 2))


@pytest.mark.parametrize("name, cls", [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam),
                                       ("adamw", torch.optim.AdamW), ("radam", torch.optim.RAdam)])
def test_optimizer_factory(name, cls):
    opt = build_optimizer(torch.nn.Linear(2, 2), OptimizerConfig(name=name, lr=0.01, weight_decay=1e-4))
    assert isinstance(opt, cls) and opt.param_groups[0]["weight_decay"] == 1e-4


def test_unknown_names_are_errors():
    with pytest.raises(ValueError, match="use one of sgd, adam, adamw, radam"):
        build_optimizer(torch.nn.Linear(2, 2), OptimizerConfig(name="lion"))
    with pytest.raises(ValueError, match="schedule.name='linear' is unknown"):
        lr_at(ScheduleConfig(name="linear"), 0.1, 0, 10)
