"""build_augment: the interface contract with the training loop, validation, and the pixel-moving policies."""
import os

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from budgetnet.data.augment import build_augment
from budgetnet.data.augment.basic import shift_crop
from budgetnet.data.policies import parse_augment


def images(n=16, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


def test_empty_list_is_identity():
    x = images()
    views, targets = build_augment(parse_augment([]), 10)(x, torch.arange(16))
    assert views.dtype == torch.float32 and torch.equal(views, x.float() / 255)
    assert torch.equal(targets, torch.arange(16))


def test_contract_shapes_and_reproducibility():
    aug = build_augment(parse_augment([{"name": "crop", "padding": 4}, {"name": "flip", "p": 0.5}]), 10)
    assert aug.num_views == 1
    x, y = images(), torch.arange(16)
    torch.manual_seed(1)
    v1, t1 = aug(x, y)
    torch.manual_seed(1)
    v2, _ = aug(x, y)
    assert v1.shape == (16, 3, 32, 32) and v1.dtype == torch.float32 and 0 <= v1.min() and v1.max() <= 1
    assert torch.equal(v1, v2) and t1.dtype == torch.int64


@pytest.mark.parametrize("recipe, words", [
    ([{"name": "crpo"}], ["crpo", "crop", "flip"]),
    ([{"name": "crop", "pading": 4}], ["crop", "pading", "padding_mode"]),
    ([{"name": "crop", "padding": -1}], ["padding"]),
    ([{"name": "crop", "padding_mode": "edge"}], ["padding_mode"]),
    ([{"name": "flip", "p": 1.5}], ["p"]),
    ([{"name": "flip", "vertical_p": -0.1}], ["vertical_p"]),
    ([{"padding": 4}], ["name"]),
])
def test_validation_errors_name_the_problem(recipe, words):
    with pytest.raises(ValueError) as err:
        build_augment(parse_augment(recipe), 10)
    for word in words:
        assert word in str(err.value)


@pytest.mark.parametrize("mode, tv_mode", [("constant", "constant"), ("reflect", "reflect")])
def test_shift_crop_matches_torchvision_pad_then_crop(mode, tv_mode):
    x = images(6)
    dy, dx = torch.tensor([0, 8, 3, 5, 0, 8]), torch.tensor([0, 8, 7, 1, 8, 0])
    out = shift_crop(x, dy, dx, 4, mode)
    for i in range(6):
        ref = TF.crop(TF.pad(x[i], [4], padding_mode=tv_mode), int(dy[i]), int(dx[i]), 32, 32)
        assert torch.equal(out[i], ref)


def test_crop_offsets_are_uniform():
    torch.manual_seed(0)
    x = torch.zeros(4000, 3, 8, 8, dtype=torch.uint8)
    x[:, :, 0, 0] = 255  # track where the top-left pixel goes
    out, _ = build_augment(parse_augment([{"name": "crop", "padding": 1}]), 10)(x, torch.zeros(4000, dtype=torch.long))
    where = out[:, 0].flatten(1).argmax(1)  # 0 if it stayed or was cropped out ...
    moved = (out[:, 0].flatten(1).max(1).values > 0)
    # offset (dy, dx) in {0,1,2}^2: the pixel survives unless dy == 2 or dx == 2, i.e. 4/9 of the time
    assert abs(moved.float().mean() - 4 / 9) < 0.03
    assert set(where[moved].tolist()) == {0, 1, 8, 9}


def test_flip_probabilities():
    torch.manual_seed(0)
    x = images(1).expand(4000, -1, -1, -1)
    augment = build_augment(parse_augment([{"name": "flip", "p": 0.3, "vertical_p": 0.6}]), 10)
    out, _ = augment(x, torch.zeros(4000, dtype=torch.long))
    h = (out == x[:1].flip(-1) / 255).flatten(1).all(1) | (out == x[:1].flip(-1).flip(-2) / 255).flatten(1).all(1)
    v = (out == x[:1].flip(-2) / 255).flatten(1).all(1) | (out == x[:1].flip(-1).flip(-2) / 255).flatten(1).all(1)
    assert abs(h.float().mean() - 0.3) < 0.03 and abs(v.float().mean() - 0.6) < 0.03


def test_preview_writes_a_png_grid(tmp_path):
    from budgetnet.data.augment.preview import preview

    out = preview(parse_augment([{"name": "augmix", "jsd": True}]), images(3), tmp_path / "grid.png", samples=2)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(not os.environ.get("BUDGETNET_DATA"), reason="needs real CIFAR-10 in $BUDGETNET_DATA")
def test_augment_preview_command(tmp_path):
    from budgetnet.cli import main

    assert main(["augment-preview", "--policy", "flip", "--set", "vertical_p=1.0", "--images", "2",
                 "--samples", "2", "--out", str(tmp_path / "flip.png")]) == 0
    assert (tmp_path / "flip.png").exists()
    assert main(["augment-preview", "--policy", "flip", "--set", "vertcal_p=1", "--out", str(tmp_path / "x.png")]) == 2


def test_translate_is_an_integer_shift_within_the_range_like_torchvision_affine():
    torch.manual_seed(0)
    x = torch.zeros(2000, 3, 16, 16, dtype=torch.uint8)
    x[:, :, 8, 8] = 255  # track one pixel
    augment = build_augment(parse_augment([{"name": "translate", "max_fraction": 0.25}]), 10)
    out, _ = augment(x, torch.zeros(2000, dtype=torch.long))
    where = out[:, 0].flatten(1).argmax(1)
    dy, dx = where // 16 - 8, where % 16 - 8
    assert dy.abs().max() == 4 and dx.abs().max() == 4 and abs(dx.float().mean()) < 0.15
    for i in range(5):  # the same as torchvision's affine with that integer translation
        ref = TF.affine(x[i], angle=0.0, translate=[int(dx[i]), int(dy[i])], scale=1.0, shear=[0.0, 0.0])
        assert torch.equal(out[i], ref.float() / 255)


def test_cutout_zeroes_a_clipped_square_with_probability_p():
    torch.manual_seed(0)
    x = torch.full((2000, 3, 16, 16), 200, dtype=torch.uint8)
    augment = build_augment(parse_augment([{"name": "cutout", "size": 6, "p": 0.5}]), 10)
    out, _ = augment(x, torch.zeros(2000, dtype=torch.long))
    hole = out[:, 0] == 0
    assert torch.equal(hole, (out == 0).all(1))  # all channels
    rows, cols = hole.any(2).sum(1), hole.any(1).sum(1)
    assert torch.equal(hole.sum((1, 2)), rows * cols)  # a rectangle
    assert rows.max() == 6 and cols.max() == 6 and abs((rows > 0).float().mean() - 0.5) < 0.04


def _augment_lists(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "augment" and isinstance(value, list):
                yield value
            else:
                yield from _augment_lists(value)
    elif isinstance(node, list):
        for value in node:
            yield from _augment_lists(value)


def test_every_shipped_recipe_and_experiment_augment_list_builds():
    import yaml
    from pathlib import Path

    import budgetnet

    root = Path(budgetnet.__file__).parent
    lists = [a for f in sorted(root.glob("recipes/*.yaml")) + sorted(root.glob("study/experiments/*.yaml"))
             for a in _augment_lists(yaml.safe_load(f.read_text()))]
    assert lists
    for policies in lists:
        build_augment(parse_augment(policies), 10)


def test_alternating_flip_shows_each_image_once_each_way_in_consecutive_epochs():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (512, 3, 8, 8), dtype=torch.uint8)
    aug = build_augment(parse_augment([{"name": "flip", "mode": "alternate"}, {"name": "crop", "padding": 0}]), 10)
    seen = []
    for epoch in range(3):
        aug.set_epoch(epoch)
        order = torch.randperm(512)
        out, _ = aug(x[order], torch.zeros(512, dtype=torch.long))
        flipped = torch.empty(512, dtype=torch.bool)
        flipped[order] = (out == x[order].flip(-1) / 255).flatten(1).all(1)
        seen.append(flipped)
    assert 0.4 < seen[0].float().mean() < 0.6  # a random first flip per image
    assert torch.equal(seen[1], ~seen[0]) and torch.equal(seen[2], seen[0])  # whatever the batch order


def test_alternating_flip_must_come_first():
    with pytest.raises(ValueError, match="alternate must come first"):
        build_augment(parse_augment([{"name": "crop"}, {"name": "flip", "mode": "alternate"}]), 10)
    with pytest.raises(ValueError, match="mode must be one of random, alternate"):
        build_augment(parse_augment([{"name": "flip", "mode": "every_other"}]), 10)


def test_brightness_contrast_is_hiverges_jitter_of_the_standardised_images():
    """hiverge's batch_color_jitter on standardised images z: (z + b) * c, b and c per image from two uniform draws;
    ours on [0, 1] images, standardised after, gives the same from the same draws."""
    from budgetnet.data.cifar import DATASETS

    x, n = images(), 16
    torch.manual_seed(3)
    out, _ = build_augment(parse_augment([{"name": "brightness_contrast"}]), 10)(x, torch.zeros(n, dtype=torch.long))
    torch.manual_seed(3)
    u = torch.rand(2, n, 1, 1, 1) * 2 - 1
    b, c = u[0] * 0.1399, u[1] * 0.1308 + 1  # hiverge's cifar10_speedrun.py:609-610
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (DATASETS["cifar10"].mean, DATASETS["cifar10"].std))
    z = (x.float() / 255 - mean) / std
    assert out.shape == x.shape and out.dtype == torch.float32
    assert torch.allclose((out - mean) / std, (z + b) * c, atol=1e-5)
    assert -0.11 < out.min() < 0 and 1 < out.max() < 1.12  # not clipped: hiverge's neither


def test_brightness_contrast_draws_one_shift_and_scale_per_image_and_zero_ranges_change_nothing():
    x = torch.full((2000, 3, 4, 4), 128, dtype=torch.uint8)
    x[:, :, 0] = 0  # two levels per channel, to read each image's scale and shift back
    torch.manual_seed(0)
    aug = build_augment(parse_augment([{"name": "brightness_contrast", "brightness": 0.2, "contrast": 0.5}]), 10)
    out, _ = aug(x, torch.zeros(2000, dtype=torch.long))
    scale = (out[:, :, 1] - out[:, :, 0]).mean(-1) / (128 / 255)  # [n, 3]
    assert torch.allclose(scale, scale[:, :1], atol=1e-5)  # one scale for every channel of an image
    assert 0.5 <= scale.min() < 0.52 and 1.48 < scale.max() <= 1.5  # uniform over 1 +- 0.5
    torch.manual_seed(0)
    again, _ = aug(x, torch.zeros(2000, dtype=torch.long))
    assert torch.equal(out, again)  # torch's RNG only
    augment = build_augment(parse_augment([{"name": "brightness_contrast", "brightness": 0, "contrast": 0}]), 10)
    off, _ = augment(x, x[:, 0, 0, 0])
    assert torch.equal(off, x.float() / 255)


@pytest.mark.parametrize("policies, words", [
    ([{"name": "brightness_contrast", "brightness": -0.1}], "brightness must be >= 0"),
    ([{"name": "brightness_contrast", "contrast": 1.0}], r"contrast must be in \[0, 1\)"),
    ([{"name": "brightness_contrast"}, {"name": "trivialaugment"}], "'brightness_contrast' must come after"),
])
def test_brightness_contrast_validation(policies, words):
    with pytest.raises(ValueError, match=words):
        build_augment(parse_augment(policies), 10)
