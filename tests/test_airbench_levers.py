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
    assert summary["final_test_acc"] > 0.3  # chance is 0.1
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
    assert summary["final_test_acc"] > 0.3  # chance is 0.1
