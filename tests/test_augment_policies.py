"""The policies: sampled ops and magnitudes follow torchvision's policies, views and targets follow the contract,
the JSD loss is the AugMix paper's, randomness comes from torch's RNG only."""
import random
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2 as T

from budgetnet.data.augment import build_augment
from budgetnet.data.augment.auto import AugMix, AutoAugment, RandAugment, TrivialAugmentWide, op_space
from budgetnet.data.augment.mix import cutmix, mixup
from budgetnet.data.policies import parse_augment
from budgetnet.training.losses import training_loss

N = 20_000  # samples for frequency checks: 3 sigma of a frequency is below 0.011


def images(n=16, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


def stage_distribution(space, op, magnitude):
    """Frequencies of (op name, |magnitude|) in one stage; op -1 counts as None."""
    pairs = Counter(
        (space.names[k] if k >= 0 else None, round(abs(m), 4) if k >= 0 else 0.0)
        for k, m in zip(op.tolist(), magnitude.tolist()))
    return {key: count / len(op) for key, count in pairs.items()}


def assert_close(found, expected, tol=0.012):
    for key in set(found) | set(expected):
        assert abs(found.get(key, 0) - expected.get(key, 0)) < tol, (key, found.get(key), expected.get(key))


def assert_signs_balanced(space, op, magnitude):
    signed = space.signed[op.clamp(min=0)] & (op >= 0) & (magnitude != 0)
    assert abs((magnitude[signed] < 0).float().mean() - 0.5) < 0.02


def test_autoaugment_follows_the_cifar10_policy():
    torch.manual_seed(0)
    space, stages = AutoAugment().sample(N, 32, 32, torch.device("cpu"))
    table = T.AutoAugment(T.AutoAugmentPolicy.CIFAR10)._policies
    for i, (op, magnitude) in enumerate(stages):
        expected = Counter()
        for sub in table:
            name, p, bin = sub[i]
            bins = op_space("AutoAugment", 10, 32, 32).bins[space.names.index(name)]
            expected[(name, round(float(bins[bin or 0]), 4))] += p / len(table)
            expected[(None, 0.0)] += (1 - p) / len(table)
        assert_close(stage_distribution(space, op, magnitude), expected)
        assert_signs_balanced(space, op, magnitude)


def test_randaugment_draws_num_ops_uniform_ops_at_the_given_magnitude():
    torch.manual_seed(0)
    space, stages = RandAugment(num_ops=3, magnitude=5, num_magnitude_bins=11).sample(N, 32, 32, torch.device("cpu"))
    assert len(stages) == 3
    op, magnitude = stages[1]
    expected = {(name, round(float(space.bins[k, 5]), 4)): 1 / len(space.names) for k, name in enumerate(space.names)}
    assert_close(stage_distribution(space, op, magnitude), expected)
    assert_signs_balanced(space, op, magnitude)


def test_trivialaugment_draws_one_uniform_op_at_a_uniform_bin():
    torch.manual_seed(0)
    space, [(op, magnitude)] = TrivialAugmentWide().sample(N, 32, 32, torch.device("cpu"))
    assert_close({name: (op == k).float().mean().item() for k, name in enumerate(space.names)},
                 {name: 1 / 14 for name in space.names})
    rotate = magnitude[op == space.names.index("Rotate")].abs()
    assert set(rotate.unique().tolist()) <= set(space.bins[space.names.index("Rotate")].tolist())
    assert abs(rotate.mean() - 135 / 2) < 2.5  # uniform over linspace(0, 135, 31)
    assert_signs_balanced(space, op, magnitude)


@pytest.mark.parametrize("all_ops, num_ops", [(True, 13), (False, 9)])
def test_augmix_chains_have_depth_1_to_3_uniform_ops_and_bins_below_severity(all_ops, num_ops):
    torch.manual_seed(0)
    space, stages = AugMix(severity=2, all_ops=all_ops, magnitudes="torchvision").sample(N, 32, 32, torch.device("cpu"))
    assert len(space.names) == num_ops and len(stages) == 3
    depth = sum((op >= 0).long() for op, _ in stages)
    assert_close({d: (depth == d).float().mean().item() for d in (1, 2, 3)}, {1: 1 / 3, 2: 1 / 3, 3: 1 / 3})
    op, magnitude = stages[0]
    assert (op >= 0).all()
    assert_close({k: (op == k).float().mean().item() for k in range(num_ops)}, {k: 1 / num_ops for k in range(num_ops)})
    for k in range(num_ops):
        allowed = {round(v, 4) for v in space.bins[k, :2].tolist()}  # severity 2: bins 0 and 1
        assert {round(abs(v), 4) for v in magnitude[op == k].tolist()} <= allowed
    assert AugMix(chain_depth=2, magnitudes="torchvision").sample(10, 32, 32, torch.device("cpu"))[1][1][0].ge(0).all()


@pytest.mark.parametrize("recipe, reference", [
    ({"name": "autoaugment"}, T.AutoAugment(T.AutoAugmentPolicy.CIFAR10)),
    ({"name": "randaugment"}, T.RandAugment()),
    ({"name": "trivialaugment"}, T.TrivialAugmentWide()),
    ({"name": "augmix", "magnitudes": "torchvision"}, T.AugMix()),
    ({"name": "augmix", "magnitudes": "torchvision", "severity": 8, "mixture_width": 2, "chain_depth": 2},
     T.AugMix(8, 2, 2)),
])
def test_policy_changes_images_as_much_as_torchvision(recipe, reference):
    """End to end: the mean absolute pixel change per image agrees with torchvision's (within 4 standard errors)."""
    torch.manual_seed(0)
    x = images(200, 16).repeat(2, 1, 1, 1)
    ours, _ = build_augment(parse_augment([recipe]), 10)(x, torch.zeros(len(x), dtype=torch.long))
    theirs = torch.stack([reference(xi) for xi in x]).float() / 255
    ours, theirs = ((v - x.float() / 255).abs().mean((1, 2, 3)) for v in (ours, theirs))
    standard_error = ((ours.var() + theirs.var()) / len(x)).sqrt()
    assert abs(ours.mean() - theirs.mean()) < 4 * standard_error
    assert standard_error < 0.1 * theirs.mean()  # the check has teeth


def test_augmix_jsd_views_are_clean_then_two_augmix_views():
    torch.manual_seed(0)
    x, y = images(8), torch.arange(8)
    aug = build_augment(parse_augment([{"name": "augmix", "jsd": True, "jsd_lambda": 6}]), 10)
    assert aug.num_views == 3 and aug.jsd_lambda == 6.0
    views, targets = aug(x, y)
    assert views.shape == (24, 3, 16, 16) and views.dtype == torch.float32 and torch.equal(targets, y)
    assert torch.equal(views[:8], x.float() / 255)
    assert 0 <= views.min() and views.max() <= 1
    assert not torch.allclose(views[8:16], views[16:]) and not torch.allclose(views[8:16], views[:8])
    default = build_augment(parse_augment([{"name": "augmix", "jsd": True}]), 10)
    assert default.jsd_lambda == 12.0 and build_augment(parse_augment([{"name": "augmix"}]), 10).num_views == 1


def test_clean_view_has_the_policies_before_augmix():
    x, y = images(8), torch.arange(8)
    torch.manual_seed(3)
    pre, _ = build_augment(parse_augment([{"name": "crop"}, {"name": "flip"}]), 10)(x, y)
    torch.manual_seed(3)
    augment = build_augment(parse_augment([{"name": "crop"}, {"name": "flip"}, {"name": "augmix", "jsd": True}]), 10)
    views, _ = augment(x, y)
    assert torch.equal(views[:8], pre)


def test_jsd_loss_is_cross_entropy_on_clean_plus_lambda_times_jsd():
    torch.manual_seed(0)
    logits, y = torch.randn(3 * 5, 10) * 3, torch.randint(0, 10, (5,))
    p = [F.softmax(z.double(), 1) for z in logits.chunk(3)]
    m = sum(p) / 3
    js = sum((q * (q / m).log()).sum(1).mean() for q in p) / 3
    ce = -F.log_softmax(logits[:5].double(), 1)[torch.arange(5), y].mean()
    assert torch.allclose(training_loss(logits, y, num_views=3, jsd_lambda=12.0), (ce + 12 * js).float(), atol=1e-5)


def test_mixup_and_cutmix_equal_torchvision_for_a_fixed_ratio_and_box():
    x, y = images(6), torch.arange(6)
    soft = F.one_hot(y, 10).float()
    tv = T.MixUp(num_classes=10)
    tv.make_params = lambda flat: {"lam": 0.3}
    ref_x, ref_y = tv(x.float() / 255, y)
    out_x, out_y = mixup(x, soft, 0.3)
    assert torch.allclose(out_x, ref_x, atol=1e-6) and torch.allclose(out_y, ref_y)
    tv = T.CutMix(num_classes=10)
    tv.make_params = lambda flat: {"box": (2, 3, 9, 14), "lam_adjusted": 1 - 7 * 11 / 256}
    ref_x, ref_y = tv(x, y)
    out_x, out_y = cutmix(x, soft, (2, 3, 9, 14))
    assert torch.equal(out_x, ref_x) and torch.allclose(out_y, ref_y)


@pytest.mark.parametrize("name", ["mixup", "cutmix"])
def test_mixing_probability_and_views_share_pairs(name):
    torch.manual_seed(0)
    x, y = images(4, 8), torch.arange(4)
    aug = build_augment(parse_augment([{"name": name, "p": 0.3}]), 4)
    mixed = sum(int(aug(x, y)[1].max() < 1) for _ in range(1000))
    assert abs(mixed / 1000 - 0.3) < 0.05
    aug = build_augment(parse_augment([{"name": "augmix", "jsd": True}, {"name": name}]), 4)
    views, targets = aug(x, y)
    assert views.shape == (12, 3, 8, 8) and targets.shape == (4, 4) and torch.allclose(targets.sum(1), torch.ones(4))


ALL = [{"name": "crop", "padding_mode": "reflect"}, {"name": "flip", "vertical_p": 0.5}, {"name": "translate"},
       {"name": "cutout", "size": 4}, {"name": "autoaugment"}, {"name": "randaugment"}, {"name": "trivialaugment"},
       {"name": "augmix", "jsd": True}, {"name": "mixup"}, {"name": "cutmix"}]


def test_randomness_is_torchs_only():
    x, y = images(8), torch.arange(8)
    aug = build_augment(parse_augment(ALL), 10)
    outputs = []
    for python_seed in (1, 2):
        random.seed(python_seed)
        torch.manual_seed(0)
        aug(x, y)
        state = torch.get_rng_state()
        first = aug(x, y)
        torch.set_rng_state(state)  # resuming from a saved state replays the same batch
        outputs += [first, aug(x, y)]
    for views, targets in outputs[1:]:
        assert torch.equal(views, outputs[0][0]) and torch.equal(targets, outputs[0][1])


@pytest.mark.parametrize("recipe, words", [
    ([{"name": "autoaugmnet"}], ["autoaugmnet", "autoaugment"]),
    ([{"name": "augmix", "lambda": 3}], ["augmix", "lambda", "jsd_lambda"]),
    ([{"name": "augmix", "severity": 11}], ["severity"]),
    ([{"name": "augmix", "chain_depth": 0}], ["chain_depth"]),
    ([{"name": "augmix", "alpha": 0}], ["alpha"]),
    ([{"name": "augmix", "jsd": True}, {"name": "augmix", "jsd": True}], ["jsd"]),
    ([{"name": "randaugment", "magnitude": 31}], ["magnitude"]),
    ([{"name": "randaugment", "num_ops": -1}], ["num_ops"]),
    ([{"name": "autoaugment", "policy": "cifar100"}], ["policy"]),
    ([{"name": "trivialaugment", "interpolation": "cubic"}], ["interpolation"]),
    ([{"name": "cutout", "size": -2}], ["size"]),
    ([{"name": "translate", "max_fraction": 2}], ["max_fraction"]),
    ([{"name": "mixup", "alpha": -1}], ["alpha"]),
    ([{"name": "cutmix", "p": 1.1}], ["p"]),
])
def test_validation(recipe, words):
    with pytest.raises(ValueError) as err:
        build_augment(parse_augment(recipe), 10)
    for word in words:
        assert word in str(err.value)
