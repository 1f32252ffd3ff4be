"""Each op of the auto-augment policies against torchvision's, image by image, at fixed magnitudes."""
import pytest
import torch
import torchvision.transforms.v2 as T

from budgetnet.data.augment.auto import op_space
from budgetnet.data.augment.ops import GEOMETRIC, PIXEL, apply_ops
from budgetnet.data.augment.spaces import AUTOAUGMENT_POLICIES, SPACES

REFERENCE = T.AutoAugment()._apply_image_or_video_transform  # what all of torchvision's policies call
MAGNITUDES = {  # the bin edges of the four policies' spaces, both signs, and some values in between
    "ShearX": [0.3, -0.99, 0.1], "ShearY": [0.3, -0.5, 0.99], "TranslateX": [14.5, -9.0, 32.0, -3.2, 10.67],
    "TranslateY": [14.5, -9.0, 1.0], "Rotate": [30.0, -135.0, 90.0, 4.5, -7.3, 0.0],
    "Brightness": [0.9, -0.99, 0.33], "Color": [0.9, -0.99, 0.33], "Contrast": [0.9, -0.99, 0.33],
    "Sharpness": [0.9, -0.99, 0.33], "Posterize": [8, 4, 2, 0], "Solarize": [1.0, 0.5, 0.0, 0.2667],
    "AutoContrast": [0.0], "Equalize": [0.0], "Invert": [0.0], "Identity": [0.0],
}


def images(n=6, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    x[1] = x[1] // 4 + 60  # low contrast, for autocontrast and equalize
    x[2] = 128  # flat
    return x


def reference(x, name, magnitudes, interpolation):
    mode = T.InterpolationMode(interpolation)
    return torch.stack([REFERENCE(xi, name, float(m), interpolation=mode, fill={torch.Tensor: None})
                        for xi, m in zip(x, magnitudes)])


def test_every_op_of_torchvisions_spaces_is_covered():
    names = set()
    for space in ("AutoAugment", "RandAugment", "TrivialAugmentWide", "AugMix"):
        names |= set(op_space(space, 10, 16, 16).names)
    assert names == set(GEOMETRIC) | set(PIXEL) == set(MAGNITUDES)


@pytest.mark.parametrize("name, interpolation", [(name, "nearest") for name in sorted(MAGNITUDES)]
                         + [(name, "bilinear") for name in sorted(GEOMETRIC)])
def test_op_equals_torchvision(name, interpolation):
    """Equal (within float rounding for bilinear resampling), a different magnitude per image in one batched call."""
    x = images(max(2 * len(MAGNITUDES[name]), 4))
    magnitudes = torch.tensor(MAGNITUDES[name] * 4, dtype=torch.float64)[:len(x)]
    out, order = apply_ops(x, [name], torch.zeros(len(x), dtype=torch.long), magnitudes, interpolation)
    assert torch.equal(order, torch.arange(len(x)))  # one op for all: the batch keeps its order
    assert out.dtype == torch.uint8 and out.shape == x.shape
    expected = reference(x, name, magnitudes, interpolation)
    if interpolation == "nearest":  # a copy of pixels, or integer pixel maps: exact on every CPU
        assert torch.equal(out, expected)
    else:
        assert_within_float_rounding(out, expected)


def assert_within_float_rounding(out, expected):
    """Bilinear grid_sample sums four float32 products of a pixel (<= 255) and a weight (<= 1), then rounds to
    the nearest level. Vectorised code differs between CPUs (AVX2 vs AVX-512 kernels, fused or separate
    multiply-adds: an Intel Xeon's torch gave 1 level off in 1 value of 4,608, issue 20), which moves the sum by a
    few float32 ulps of 255, about 255 * 4 * 2**-23 = 1.2e-4. That changes the rounded level only where the exact
    value lies within 1.2e-4 of a half-integer, by 1 level: about 2.4e-4 of the values for spread-out
    fractions. So: no value off by more than 1, and at most 1% of them off by 1 (40 times that expectation,
    still far below what a wrong formula gives: a wrong shear or angle moves most of the pixels)."""
    diff = (out.int() - expected.int()).abs()
    assert diff.max() <= 1, f"{int(diff.max())} levels off"
    assert (diff > 0).float().mean() <= 0.01, f"{int((diff > 0).sum())} of {diff.numel()} values off by 1"


def test_apply_ops_mixes_ops_in_one_batch_and_returns_the_order():
    torch.manual_seed(0)
    names = list(MAGNITUDES)
    x = images(60)
    op = torch.randint(-1, len(names), (60,))
    magnitude = torch.tensor([MAGNITUDES[names[k]][0] if k >= 0 else 0.0 for k in op.tolist()], dtype=torch.float64)
    out, order = apply_ops(x, names, op, magnitude, "nearest")
    for j, i in enumerate(order.tolist()):
        expected = x[i] if op[i] < 0 else reference(x[i:i + 1], names[op[i]], magnitude[i:i + 1], "nearest")[0]
        assert torch.equal(out[j], expected), (names[op[i]], float(magnitude[i]))


@pytest.mark.parametrize("space_name, attribute", [
    ("AutoAugment", "_AUGMENTATION_SPACE"), ("RandAugment", "_AUGMENTATION_SPACE"),
    ("TrivialAugmentWide", "_AUGMENTATION_SPACE"), ("AugMix", "_AUGMENTATION_SPACE"),
    ("AugMix-partial", "_PARTIAL_AUGMENTATION_SPACE")])
def test_the_copied_spaces_equal_torchvisions(space_name, attribute):
    """budgetnet copies the spaces (torchvision's are private); the copy must still be torchvision's."""
    theirs = getattr(getattr(T, space_name.split("-")[0]), attribute, None)
    if theirs is None:
        pytest.skip(f"this torchvision has no {space_name}.{attribute} to compare with")
    ours = SPACES[space_name]
    assert list(ours) == list(theirs)
    for name, (fn, signed) in theirs.items():
        assert ours[name][1] == signed, name
        for num_bins, h, w in ((10, 32, 32), (31, 16, 24)):
            mine, reference_bins = ours[name][0](num_bins, h, w), fn(num_bins, h, w)
            assert (mine is None) == (reference_bins is None), name
            if mine is not None:
                assert torch.equal(mine, reference_bins), name


@pytest.mark.parametrize("policy", ["cifar10", "imagenet", "svhn"])
def test_the_copied_autoaugment_policies_equal_torchvisions(policy):
    theirs = getattr(T.AutoAugment(T.AutoAugmentPolicy(policy)), "_policies", None)
    if theirs is None:
        pytest.skip("this torchvision keeps no AutoAugment._policies to compare with")
    assert AUTOAUGMENT_POLICIES[policy] == theirs
