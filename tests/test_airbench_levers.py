"""airbench94's levers as recipe options: the whitening bias trained for its first epochs, alternating flip,
6-view TTA, Muon on conv filters; each off by default."""
import json

import pytest
import torch

from budgetnet.training import checkpoint
from budgetnet.training.loop import train
from conftest import Crash, crash_after, tiny_recipe


def test_whitening_bias_trains_its_epochs_then_stays_and_resume_is_exact(tiny_data, tmp_path):
    """Both depend on the epoch: the whitening bias (frozen after epoch 1) and the alternating flip."""
    recipe = tiny_recipe("epochs=3", "model.stem=whiten", "model.whiten_bias_epochs=1",
                         "optimizer.decoupled_weight_decay=true",
                         "augment=[{name: flip, mode: alternate}, {name: crop, padding: 4}]")
    train(recipe, tmp_path / "full", data=tiny_data, progress=False)
    with pytest.raises(Crash):
        train(recipe, tmp_path / "killed", data=tiny_data, progress=False, on_epoch=crash_after(1))
    after_one = checkpoint.load(tmp_path / "killed" / "checkpoints" / "last.pt")["model"]["stem.bias"]
    assert after_one.abs().sum() > 0  # it trained (from zero) during epoch 1
    train(None, tmp_path / "killed", data=tiny_data, progress=False, resume=True)
    full = checkpoint.load(tmp_path / "full" / "checkpoints" / "last.pt")["model"]
    resumed = checkpoint.load(tmp_path / "killed" / "checkpoints" / "last.pt")["model"]
    assert torch.equal(full["stem.bias"], after_one)  # frozen from epoch 2 on, weight decay included
    for key, value in full.items():
        assert torch.equal(value, resumed[key]), key
    assert json.loads((tmp_path / "full" / "summary.json").read_text())["params"] == recipe.model.count_params()


def test_muon_trains_and_resumes_exactly(tiny_data, tmp_path):
    recipe = tiny_recipe("epochs=2", "optimizer.name=muon", "optimizer.muon_lr=0.1")
    summary = train(recipe, tmp_path / "full", data=tiny_data, progress=False)
    assert summary.final_test_acc > 0.3  # chance is 0.1
    with pytest.raises(Crash):
        train(recipe, tmp_path / "killed", data=tiny_data, progress=False, on_epoch=crash_after(1))
    train(None, tmp_path / "killed", data=tiny_data, progress=False, resume=True)
    full = checkpoint.load(tmp_path / "full" / "checkpoints" / "last.pt")["model"]
    resumed = checkpoint.load(tmp_path / "killed" / "checkpoints" / "last.pt")["model"]
    for key, value in full.items():
        assert torch.equal(value, resumed[key]), key


def test_flip_translate_tta_is_airbenchs_six_view_tta_level_2():
    utils = pytest.importorskip("airbench.utils")
    from types import SimpleNamespace

    from budgetnet.design.model import ResNet
    from budgetnet.design.spec import ModelSpec
    from budgetnet.training.scoring import tta_views
    torch.manual_seed(0)
    model = ResNet(ModelSpec(blocks=[1], channels=4, pool_size=32)).eval()
    x = torch.randn(6, 3, 32, 32)
    theirs = utils.infer(model, SimpleNamespace(images=x, normalize=lambda images: images), tta_level=2)
    views = tta_views(x, "flip_translate")
    with torch.no_grad():
        ours = sum(weight * model(view) for weight, view in views)
    assert len(views) == 6
    torch.testing.assert_close(ours, theirs)


def test_whitening_bias_is_refused_under_ddp_before_any_work(tiny_data, tmp_path, monkeypatch):
    from budgetnet.config import RecipeError
    from budgetnet.training.runtime import Dist
    monkeypatch.setattr("budgetnet.training.loop.init_distributed", lambda device: Dist(0, 2, 0))
    with pytest.raises(RecipeError, match="model.whiten_bias_epochs freezes a parameter part-way"):
        train(tiny_recipe("model.stem=whiten", "model.whiten_bias_epochs=1"), tmp_path / "run", data=tiny_data,
              progress=False)
    assert not (tmp_path / "run").exists()


AIRBENCH94 = ["model.stem=whiten", "model.downsample=pool", "model.blocks=[1, 0]", "model.channels=[16, 32]",
              "model.pool_size=8", "model.bn_scale=false", "model.bn_momentum=0.4", "model.bn_eps=1e-12",
              "model.activation=gelu", "model.output_scale=0.1111111111111111", "model.dirac_init=true",
              "model.whiten_bias_epochs=1", "optimizer.units=per_1024", "optimizer.lr=11.5",
              "optimizer.weight_decay=0.0153", "optimizer.momentum=0.85", "optimizer.nesterov=true",
              "optimizer.norm_lr_scale=64", "schedule.name=triangle", "schedule.pct_start=0.23",
              "schedule.start_factor=0.2", "schedule.end_factor=0.07", "tta=flip_translate", "label_smoothing=0.2",
              "augment=[{name: flip, mode: alternate}, {name: crop, padding: 2, padding_mode: reflect}]"]


@pytest.mark.parametrize("optimizer", ["sgd", "muon"])
def test_every_lever_together_learns(tiny_data, tmp_path, optimizer):
    recipe = tiny_recipe(*AIRBENCH94, f"optimizer.name={optimizer}", "epochs=3")
    summary = train(recipe, tmp_path / "run", data=tiny_data, progress=False)
    assert summary.final_test_acc > 0.3  # chance is 0.1


# ---- airbench94_muon's levers -----------------------------------------------------------------------------

def test_whitening_bias_as_norm_takes_the_bias_lr_and_falls_to_zero_over_its_epochs():
    """airbench94_muon: its whitening bias at the BatchNorm biases' lr (0.053 as against the head's 0.67),
    lr * (1 - step / (3 epochs of steps)); the other groups keep the schedule."""
    from budgetnet.config import OptimizerConfig, ScheduleConfig, load_recipe
    from budgetnet.design.model import ResNet
    from budgetnet.errors import UsageError
    from budgetnet.training.optim import build_optimizer, build_scheduler

    spec = load_recipe("small", ["model.channels=[8, 16, 16]"]).model
    model = ResNet(spec)
    cfg = OptimizerConfig(name="muon", lr=1340.0, momentum=0.85, nesterov=True, weight_decay=2.985e-6,
                          norm_lr_scale=0.0791, norm_weight_decay=3.774e-5, whiten_bias_as_norm=True)
    opt = build_optimizer(model, cfg)
    weights, norms, whiten, muon = opt.param_groups
    assert whiten["params"] == [model.stem.bias] and all(p is not model.stem.bias for p in weights["params"])
    assert whiten["lr"] == norms["lr"] == pytest.approx(1340 * 0.0791)
    assert whiten["weight_decay"] == norms["weight_decay"] == 3.774e-5
    schedule = build_scheduler(opt, ScheduleConfig(name="triangle", pct_start=1e-6, start_factor=1, end_factor=0),
                               total_steps=8 * 25, steps_per_epoch=25)
    lrs = []
    for _ in range(100):
        lrs.append([g["lr"] for g in opt.param_groups])
        schedule.step()
    for step in (0, 30, 74, 75, 99):
        assert lrs[step][2] == pytest.approx(1340 * 0.0791 * max(0.0, 1 - step / 75))
        assert lrs[step][0] == pytest.approx(1340 * (1 - step / 200), rel=1e-5)  # the schedule, unchanged
    with pytest.raises(UsageError, match="whiten_bias_as_norm=True needs a whitening bias"):
        load_recipe("small", ["model.whiten_bias_epochs=0", "optimizer.whiten_bias_as_norm=true"]).validate()


def test_without_its_shortcut_small_is_airbench94_muons_network_exactly():
    """model.residual=false: small's design computes airbench94_muon.py's CifarNet, given its weights (our fc's
    bias at 0); fc_init_std=1 starts the classifier as its head starts."""
    from test_optim import _airbench94_muon
    from budgetnet.config import load_recipe
    from budgetnet.design.model import ResNet, count_trainable

    module = _airbench94_muon()
    torch.manual_seed(0)
    theirs = module.CifarNet().float()
    theirs.reset()
    spec = load_recipe("small", ["model.residual=false", "model.fc_init_std=1.0", "model.output_scale=0.00390625"]
                       ).model
    ours = ResNet(spec)
    assert ours.fc.weight.std().item() == pytest.approx(1.0)
    assert count_trainable(ours) == count_trainable(theirs) + 10  # + our fc bias
    mine = [t for k, t in ours.state_dict().items() if not k.startswith(("stem", "fc"))]
    their = [t for k, t in theirs.state_dict().items() if not k.startswith(("whiten", "head"))]
    assert [t.shape for t in mine] == [t.shape for t in their]
    with torch.no_grad():
        for a, b in zip(mine, their):
            a.copy_(b)
        ours.stem.weight.copy_(theirs.whiten.weight)
        ours.stem.bias.copy_(theirs.whiten.bias)
        ours.fc.weight.copy_(theirs.head.weight)
        ours.fc.bias.zero_()
    x = torch.randn(4, 3, 32, 32)
    for mode in (True, False):  # batch statistics, then running ones
        ours.train(mode), theirs.train(mode)
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-4, atol=1e-5)
