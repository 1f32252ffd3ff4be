"""The design space: exact parameter counts, validation errors, budget enforcement and C_1 fitting."""
import dataclasses
import random

import pytest
import torch

from budgetnet.design.model import ResNet, count_trainable
from budgetnet.design.spec import BudgetError, ModelSpec, SpecError, check_budget, fit_channels


def test_study_final_model_has_4815940_parameters():
    spec = ModelSpec(blocks=[2, 2, 2, 2], channels=42, kernel_size=3, shortcut_kernel_size=1, pool_size=4)
    assert spec.stage_channels() == [42, 84, 168, 336]
    assert spec.count_params() == 4_815_940
    assert count_trainable(ResNet(spec)) == 4_815_940


def test_classic_cifar_resnet18_has_11173962_parameters():
    spec = ModelSpec(channels=64)
    assert spec.count_params() == count_trainable(ResNet(spec)) == 11_173_962


@pytest.mark.parametrize("kw", [
    dict(blocks=[3, 4, 6, 3], channels=16, block="bottleneck"),
    dict(blocks=[1, 1, 1], channels=[10, 30, 50], kernel_size=[3, 5, 7], shortcut_kernel_size=[1, 3, 5]),
    dict(blocks=[2, 1, 1, 1, 1], channels=8, pool_size=1),
    dict(blocks=[2, 2, 2], channels=20, pool_size=2, num_classes=100),
    dict(blocks=[1], channels=12, kernel_size=5, pool_size=8),
])
def test_closed_form_matches_module_and_forward_shape(kw):
    spec = ModelSpec(**kw)
    model = ResNet(spec)
    assert spec.count_params() == count_trainable(model)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, spec.num_classes)


def random_designs(n: int, seed: int = 0):
    """`n` designs drawn across the design space (stages, blocks, widths, kernels, shortcuts, pool, block type,
    stem, downsampling, BatchNorm scale, shortcut on/off, classes)."""
    rng = random.Random(seed)
    for _ in range(n):
        stages = rng.randint(1, 4)
        block = rng.choice(["basic", "bottleneck", "single"])
        downsample = rng.choice(["stride", "pool"])
        stem = rng.choice(["conv", "whiten"])
        yield ModelSpec(
            blocks=[rng.randint(0 if downsample == "pool" else 1, 3) for _ in range(stages)],
            channels=rng.choice([rng.randint(4, 24), [rng.randint(4, 40) for _ in range(stages)]]),
            kernel_size=[rng.choice([1, 3, 5]) for _ in range(stages)],
            shortcut_kernel_size=[rng.choice([1, 3]) for _ in range(stages)],
            pool_size=rng.choice([1, 2]), pool_type=rng.choice(["avg", "max"]), block=block, stem=stem,
            whiten_padding=rng.choice(["same", "valid"]) if stem == "whiten" else "same", downsample=downsample,
            bn_scale=rng.random() < 0.5, residual=block != "single" or rng.random() < 0.5,
            whiten_bias_epochs=rng.choice([0, 3]) if stem == "whiten" else 0, num_classes=rng.choice([10, 100]))


def test_closed_form_count_equals_the_built_module_across_the_design_space():
    """count_params restates the model's stage loop in closed form (about 0.3 ms a count against 3-15 ms for
    building the module on the meta device, and the budget fit counts many times): it must agree with the module."""
    checked = 0
    for spec in random_designs(300):
        try:
            spec.validate()
        except SpecError:
            continue
        with torch.device("meta"):
            model = ResNet(spec)
        assert spec.count_params() == count_trainable(model), spec
        checked += 1
    assert checked >= 100


def test_stage_table_rows_sum_to_total():
    spec = ModelSpec(channels=42)
    rows = spec.stage_table()
    assert [r["layer"] for r in rows] == ["stem", "stage 1", "stage 2", "stage 3", "stage 4", "avg pool 4 + fc"]
    assert [r["output"] for r in rows[1:5]] == ["42x32x32", "84x16x16", "168x8x8", "336x4x4"]
    assert sum(r["params"] for r in rows) == 4_815_940


@pytest.mark.parametrize("kw, message", [
    (dict(kernel_size=[3, 3, 3]), "has 3 values but model.blocks has N=4"),
    (dict(channels=[16, 32]), "has 2 values but model.blocks has N=4"),
    (dict(kernel_size=4), "even size"),
    (dict(shortcut_kernel_size=2), "even size"),
    (dict(pool_size=3), "does not fit the final 4x4 feature map"),
    (dict(pool_size=8), "use one of [1, 2, 4]"),
    (dict(channels=0), "model.channels=0 must be 1 or more"),
    (dict(blocks=[2, -1, 2, 2]), "model.blocks.1=-1 must be 0 or more"),
    (dict(blocks=[]), "model.blocks is empty"),
    (dict(block="wide"), "model.block='wide' is unknown"),
    (dict(num_classes=0), "model.num_classes=0 must be 1 or more"),
    (dict(blocks=[1] * 7), "does not divide evenly"),
])
def test_validation_names_the_problem(kw, message):
    with pytest.raises(SpecError) as err:
        ModelSpec(**kw).validate()
    assert message in str(err.value)


def test_over_budget_message_names_count_budget_and_fitting_c1():
    with pytest.raises(BudgetError) as err:
        check_budget(ModelSpec(channels=64), 5_000_000)
    msg = str(err.value)
    assert "11,173,962" in msg and "5,000,000" in msg and "largest C_1 that fits" in msg and "42" in msg
    assert check_budget(ModelSpec(channels=42), 5_000_000) == 4_815_940


def test_fit_channels_is_the_widest_that_fits():
    spec = ModelSpec(channels=64)
    assert fit_channels(spec, 5_000_000) == 42  # what the study did by hand
    for budget in (100_000, 1_234_567, 20_000_000):
        c = fit_channels(spec, budget)
        assert dataclasses.replace(spec, channels=c).count_params() <= budget
        assert dataclasses.replace(spec, channels=c + 1).count_params() > budget


def test_fit_channels_errors():
    with pytest.raises(BudgetError, match="even C_1=1"):
        fit_channels(ModelSpec(), 100)
    with pytest.raises(BudgetError, match="even C_1=1 is over budget .* GFLOP per image > max_gflops 1e-06"):
        fit_channels(ModelSpec(), 10**9, max_gflops=1e-6)


def test_the_compute_budget_refuses_and_fits_like_the_parameter_budget():
    """A design over max_gflops (forward+backward GFLOP per image) is refused however few its parameters, and
    the fitted C_1 (or list of widths, scaled together) is the widest within both budgets."""
    seed = ModelSpec(channels=42)
    assert seed.gflop_per_image() == pytest.approx(1.435283136)
    assert check_budget(seed, 5_000_000, max_gflops=1.5) == 4_815_940
    with pytest.raises(BudgetError, match=r"1.4353 GFLOP per image > max_gflops 1; the largest C_1 .* is (\d+)"):
        check_budget(seed, 5_000_000, max_gflops=1.0)
    c = fit_channels(seed, 5_000_000, max_gflops=1.0)
    assert dataclasses.replace(seed, channels=c).gflop_per_image() <= 1.0 < \
        dataclasses.replace(seed, channels=c + 1).gflop_per_image()
    assert fit_channels(seed, 1_000_000, max_gflops=1.0) == fit_channels(seed, 1_000_000) < c  # params bind here
    widths = ModelSpec(blocks=[1, 1, 1], channels=[64, 256, 256], block="single", downsample="pool", pool_size=2)
    fitted = fit_channels(widths, 5_000_000, max_gflops=0.4)
    assert fitted[1] == fitted[2] and abs(fitted[1] - 4 * fitted[0]) <= 2  # the ratios kept
    assert dataclasses.replace(widths, channels=fitted).gflop_per_image() <= 0.4
    wider = [fitted[0] + 1, round((fitted[0] + 1) * 4), round((fitted[0] + 1) * 4)]
    assert dataclasses.replace(widths, channels=wider).gflop_per_image() > 0.4


# ---- airbench94's model options -------------------------------------------------------------------

AIRBENCH_LIKE = dict(blocks=[1, 1, 0], channels=[8, 16, 16], stem="whiten", downsample="pool")


@pytest.mark.parametrize("kw", [
    dict(AIRBENCH_LIKE, bn_scale=False, whiten_bias_epochs=3),
    dict(AIRBENCH_LIKE, bn_scale=False),
    dict(blocks=[1, 1], channels=8, bn_scale=False),
    dict(blocks=[1, 1], channels=4, block="bottleneck", bn_scale=False, activation="gelu"),
    dict(AIRBENCH_LIKE, block="single", whiten_padding="valid", pool_size=3, pool_type="max"),
    dict(blocks=[2, 1, 1], channels=[8, 8, 16], block="single", pool_type="max", pool_size=2),
])
def test_new_options_are_counted_exactly_in_closed_form_and_module(kw):
    spec = ModelSpec(**kw)
    model = ResNet(spec)
    assert spec.count_params() == count_trainable(model)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_frozen_bn_scale_is_one_untrained_and_uncounted():
    base = ModelSpec(blocks=[1, 1], channels=8)
    spec = dataclasses.replace(base, bn_scale=False)
    bns = [m for m in ResNet(spec).modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(not m.weight.requires_grad and bool((m.weight == 1).all()) for m in bns)
    assert base.count_params() - spec.count_params() == sum(m.num_features for m in bns)


def test_bn_momentum_and_eps_reach_every_batchnorm():
    spec = ModelSpec(blocks=[1, 1], channels=8, bn_momentum=0.4, bn_eps=1e-12)  # airbench94's BatchNorm
    bns = [m for m in ResNet(spec).modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.momentum == 0.4 and m.eps == 1e-12 for m in bns)


def test_whitening_bias_counts_in_the_budget_and_freezes():
    from budgetnet.design.model import design_report, train_whiten_bias
    spec = ModelSpec(**AIRBENCH_LIKE, whiten_bias_epochs=3)
    without = ModelSpec(**AIRBENCH_LIKE)
    assert spec.count_params() == without.count_params() + 24  # 2 * 3 * 2 * 2 whitening channels
    assert spec.count_params_whole_run() == without.count_params()
    report = design_report(spec, 10**7)
    assert (report["params"], report["params_whole_run"]) == (spec.count_params(), without.count_params())
    model = ResNet(spec)
    for trains in (False, True):
        train_whiten_bias(model, trains)
        assert model.stem.bias.requires_grad is trains


def test_silu_replaces_every_relu():
    model = ResNet(ModelSpec(blocks=[1, 1], channels=8, activation="silu"))
    assert any(isinstance(m, torch.nn.SiLU) for m in model.modules())
    assert not any(isinstance(m, (torch.nn.ReLU, torch.nn.GELU)) for m in model.modules())


def test_gelu_dirac_and_output_scale_change_the_network_as_airbench():
    spec = ModelSpec(blocks=[1, 1], channels=8, activation="gelu", dirac_init=True, output_scale=1 / 9)
    model = ResNet(spec)
    assert any(isinstance(m, torch.nn.GELU) for m in model.modules())
    assert not any(isinstance(m, torch.nn.ReLU) for m in model.modules())
    conv = model.stages[1][0].conv1[0]  # 8 -> 16 channels: the first 8 filters are the identity
    identity = torch.zeros_like(conv.weight[:8])
    torch.nn.init.dirac_(identity)
    assert torch.equal(conv.weight[:8], identity)
    assert not torch.equal(conv.weight[8:], torch.zeros_like(conv.weight[8:]))  # the rest keep their random start
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    features = model.pool(model.stages(model.stem(x))).flatten(1)
    torch.testing.assert_close(model(x), model.fc(features) / 9)


@pytest.mark.parametrize("kw, words", [
    (dict(activation="swish"), "model.activation"),
    (dict(bn_momentum=1.5), "model.bn_momentum"),
    (dict(bn_eps=0.0), "model.bn_eps"),
    (dict(whiten_bias_epochs=3), "model.whiten_bias_epochs"),  # the conv stem has no whitening bias
    (dict(stem="whiten", whiten_bias_epochs=-1), "model.whiten_bias_epochs"),
    (dict(whiten_padding="valid"), "model.whiten_padding=valid is for model.stem=whiten"),
    (dict(stem="whiten", whiten_padding="valid"), "model.downsample=pool"),
    (dict(whiten_padding="none"), "model.whiten_padding='none' is unknown"),
    (dict(pool_type="sum"), "model.pool_type='sum' is unknown"),
    (dict(stem="whiten", whiten_padding="valid", downsample="pool", blocks=[1] * 5, pool_size=1), "below 1x1"),
])
def test_bad_new_options_name_the_key(kw, words):
    with pytest.raises(SpecError, match=words):
        ModelSpec(**kw).validate()


def test_valid_whitening_floors_every_size_as_airbench():
    spec = ModelSpec(**AIRBENCH_LIKE, whiten_padding="valid", pool_size=3, pool_type="max")
    assert (spec.stem_size(), spec.stage_sizes()) == (31, [15, 7, 3])
    model = ResNet(spec)
    assert model.stem(torch.randn(2, 3, 32, 32)).shape == (2, 24, 31, 31)
    assert isinstance(model.pool, torch.nn.MaxPool2d)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_single_block_is_one_conv_bn_and_the_identity():
    spec = ModelSpec(blocks=[1], channels=8, block="single", pool_size=32)
    block = ResNet(spec).stages[0][0]
    assert sum(isinstance(m, torch.nn.Conv2d) for m in block.modules()) == 1
    x = torch.randn(2, 8, 6, 6)
    block.eval()
    torch.testing.assert_close(block(x), torch.relu(block.conv1(x) + x))


@pytest.mark.parametrize("recipe, module, make_net", [("small", "lib_airbench94", "make_net94"),
                                                     ("fast", "lib_airbench95", "make_net95")])
def test_recipe_is_airbenchs_network(recipe, module, make_net, monkeypatch):
    """small's design is airbench94's make_net94 (airbench94_muon's network is the same) and fast's airbench95's
    make_net95: the same layers, FLOPs per image and trainable parameters (budgetnet's classifier adds a 10-value
    bias)."""
    airbench = pytest.importorskip(f"airbench.{module}")
    from torch.utils.flop_counter import FlopCounterMode

    from budgetnet.config import load_recipe
    from budgetnet.design.model import flops_per_image
    monkeypatch.setattr(torch.nn.Module, "cuda", lambda self, *a, **k: self)  # build airbench's net on the CPU
    monkeypatch.setattr(torch.nn.Module, "half", lambda self: self)
    theirs = getattr(airbench, make_net)()
    spec = load_recipe(recipe).model
    ours = ResNet(spec)
    with FlopCounterMode(display=False) as counter:
        theirs(torch.randn(1, 3, 32, 32)).sum().backward()
    assert flops_per_image(spec)["forward_backward"] == counter.get_total_flops()
    assert count_trainable(ours) == count_trainable(theirs) + 10
    def shapes(m):
        return [tuple(c.weight.shape) for c in m.modules() if isinstance(c, torch.nn.Conv2d)]
    assert shapes(ours) == shapes(theirs)[1:]  # airbench's whitening is a Conv2d; ours keeps it in a buffer
    assert tuple(ours.stem.weight.shape) == shapes(theirs)[0]


def _every_design_option():
    """One small design for every combination of the options that change the layer structure."""
    for block in ("basic", "bottleneck", "single"):
        for stem, downsample, padding in [("conv", "stride", "same"), ("conv", "pool", "same"),
                                          ("whiten", "stride", "same"), ("whiten", "pool", "same"),
                                          ("whiten", "pool", "valid")]:
            for bn_scale in (True, False):
                bias = 2 if stem == "whiten" else 0
                pool = 1 if padding == "valid" else 2
                for residual in ((True, False) if block == "single" else (True,)):
                    yield dict(blocks=[2, 1, 0 if downsample == "pool" else 1], channels=[4, 8, 8], block=block,
                               stem=stem, downsample=downsample, whiten_padding=padding, bn_scale=bn_scale,
                               whiten_bias_epochs=bias, shortcut_kernel_size=[1, 3, 1], pool_size=pool,
                               pool_type="max" if bn_scale else "avg", residual=residual)


@pytest.mark.parametrize("kw", list(_every_design_option()))
def test_closed_form_flops_are_torchs_flop_counter_for_every_structural_option(kw):
    """The compute budget's closed-form count (torch-free, fast enough to enumerate a space) is what
    torch.utils.flop_counter counts on the built module, forward and forward+backward, with and without a
    trained whitening bias (which makes the first stage compute its input gradient)."""
    from budgetnet.design.model import flops_per_image
    for spec in (ModelSpec(**kw), ModelSpec(**{**kw, "whiten_bias_epochs": 0})):
        assert spec.count_flops() == flops_per_image(spec)


@pytest.mark.parametrize("kw", list(_every_design_option()))
def test_closed_form_is_the_module_for_every_structural_option(kw):
    """The closed-form count (spec.py, torch-free: the recipe check and the search use it) is the built module's,
    stage by stage, for every block type, stem, downsample, padding and BatchNorm option."""
    spec = ModelSpec(**kw)
    model = ResNet(spec)
    rows = spec.stage_table()
    assert rows[0]["params"] == count_trainable(model.stem)
    assert [r["params"] for r in rows[1:-1]] == [count_trainable(s) for s in model.stages]
    assert rows[-1]["params"] == count_trainable(model.fc)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
