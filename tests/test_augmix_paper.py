"""AugMix with magnitudes: paper: each op against PIL running the AugMix paper's augmentations.py at fixed levels,
the levels' distribution, and the whole policy against the paper's `aug` (cifar.py) on PIL images."""
import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from budgetnet.data.augment import build_augment
from budgetnet.data.augment.auto import AugMix
from budgetnet.data.augment.ops import apply_ops
from budgetnet.data.augment.paper import ALL_OPS, OPS, PAPER, SIGNED, PaperSpace
from budgetnet.data.policies import parse_augment
from budgetnet.errors import UsageError

SIZE = 32  # augmentations.py's IMAGE_SIZE
LEVELS = [0.1, 0.37, 0.9, 1.3, 2.2, 2.5, 2.99, 4.1, 5.0, 6.6, 8.3, 9.99]  # severity 3 draws below 3; up to 10


def reference(name, image, level):
    """augmentations.py's op `name` on a PIL image with the level fixed (sample_level's draw) and, for the signed
    ops, the direction given by the sign of `level` (the paper's coin flip)."""
    sign, level = (-1 if level < 0 else 1), abs(level)
    bilinear = Image.BILINEAR
    if name == "AutoContrast":
        return ImageOps.autocontrast(image)
    if name == "Equalize":
        return ImageOps.equalize(image)
    if name == "Posterize":
        return ImageOps.posterize(image, 4 - int(level * 4 / 10))
    if name == "Rotate":
        return image.rotate(sign * int(level * 30 / 10), resample=bilinear)
    if name == "Solarize":
        return ImageOps.solarize(image, 256 - int(level * 256 / 10))
    if name in ("ShearX", "ShearY"):
        shear = sign * (float(level) * 0.3 / 10.)
        data = (1, shear, 0, 0, 1, 0) if name == "ShearX" else (1, 0, 0, shear, 1, 0)
        return image.transform((SIZE, SIZE), Image.AFFINE, data, resample=bilinear)
    if name in ("TranslateX", "TranslateY"):
        shift = sign * int(level * (SIZE / 3) / 10)
        data = (1, 0, shift, 0, 1, 0) if name == "TranslateX" else (1, 0, 0, 0, 1, shift)
        return image.transform((SIZE, SIZE), Image.AFFINE, data, resample=bilinear)
    enhance = {"Color": ImageEnhance.Color, "Contrast": ImageEnhance.Contrast,
               "Brightness": ImageEnhance.Brightness, "Sharpness": ImageEnhance.Sharpness}[name]
    return enhance(image).enhance(float(level) * 1.8 / 10. + 0.1)


def photos(n=12, seed=0):
    """Real-looking uint8 images [n, 3, 32, 32]: smooth colour fields with edges, texture, flat patches (a sky),
    saturated highlights and shadows; one image flat, one low-contrast (autocontrast, equalize)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    out = np.empty((n, SIZE, SIZE, 3), np.float64)
    for i in range(n):
        field = sum(rng.normal(0, 60, 3) * np.cos(2 * np.pi * (rng.integers(0, 3) * xx + rng.integers(0, 3) * yy)
                                                  + rng.uniform(0, 2 * np.pi))[..., None] for _ in range(4))
        edge = (xx * rng.normal() + yy * rng.normal() > rng.normal(0, 0.3))[..., None] * rng.normal(0, 70, 3)
        out[i] = rng.uniform(60, 200, 3) + field + edge + rng.normal(0, rng.uniform(2, 15), (SIZE, SIZE, 3))
        out[i, : SIZE // 4, : SIZE // 2] = rng.uniform(0, 255, 3)  # a flat patch
    out[1] = out[1] / 8 + 100
    out[2] = 97
    return torch.from_numpy(np.clip(out, 0, 255).round().astype(np.uint8)).permute(0, 3, 1, 2).contiguous()


def pil_apply(name, x, levels):
    return torch.stack([torch.from_numpy(np.array(reference(name, Image.fromarray(xi.permute(1, 2, 0).numpy()),
                                                            float(level)))).permute(2, 0, 1)
                        for xi, level in zip(x, levels)])


def ours(name, x, levels):
    out, order = apply_ops(x, [name], torch.zeros(len(x), dtype=torch.long),
                           torch.tensor(levels, dtype=torch.float64), "bilinear", PAPER)
    assert torch.equal(order, torch.arange(len(x)))
    return out


def test_the_op_lists_are_the_papers():
    assert set(PAPER.pixel) | set(PAPER.geometric) == set(ALL_OPS) and len(ALL_OPS) == 13
    assert OPS == [n for n in ALL_OPS if n not in ("Color", "Contrast", "Brightness", "Sharpness")]
    assert PaperSpace(True).names == ALL_OPS and PaperSpace(False).names == OPS


@pytest.mark.parametrize("name", sorted(set(ALL_OPS) - set(SIGNED)))
def test_pixel_op_equals_pil(name):
    """Exact: the same integer arithmetic as PIL, and for the ImageEnhance ops PIL's blend in float32
    (degenerate + factor * (image - degenerate): a multiply then an add, each rounded, then truncated)."""
    x = photos().repeat(2, 1, 1, 1)[: 2 * len(LEVELS)]
    levels = (LEVELS * 2)[: len(x)]
    assert torch.equal(ours(name, x, levels), pil_apply(name, x, levels))


@pytest.mark.parametrize("name", SIGNED)
def test_geometric_op_equals_pil(name):
    """PIL's bilinear transform in float64 with its sums in its order: equal to PIL here. Allowed: 1 level in
    0.2% of the values, for a PIL built where the compiler fuses a * x + b into one rounding (aarch64 does by
    default): that moves a sample by ~1e-16 and changes the truncated level only where the exact value lies
    that close to a whole level without being one. A wrong matrix, origin or edge rule moves most pixels."""
    x = photos().repeat(2, 1, 1, 1)[: 2 * len(LEVELS)]
    levels = [level * (-1) ** i for i, level in enumerate(LEVELS * 2)][: len(x)]  # both directions
    out, expected = ours(name, x, levels), pil_apply(name, x, levels)
    diff = (out.int() - expected.int()).abs()
    assert diff.max() <= 1, f"{int(diff.max())} levels off"
    assert (diff > 0).float().mean() <= 0.002, f"{int((diff > 0).sum())} of {diff.numel()} values off by 1"


def test_enhance_degenerates_are_pils():
    """The four ImageEnhance ops at factor ~0 (level -1/1.8: not a paper level) return PIL's degenerate images:
    L (Color), the uniform mean of L rounded (Contrast), black (Brightness), SMOOTH with the border kept."""
    x, level = photos(), -1 / 1.8
    for name in ("Color", "Contrast", "Brightness", "Sharpness"):
        images = [Image.fromarray(xi.permute(1, 2, 0).numpy()) for xi in x]
        enhance = {"Color": ImageEnhance.Color, "Contrast": ImageEnhance.Contrast,
                   "Brightness": ImageEnhance.Brightness, "Sharpness": ImageEnhance.Sharpness}[name]
        expected = torch.stack([torch.from_numpy(np.array(enhance(im).degenerate)).permute(2, 0, 1) for im in images])
        assert torch.equal(ours(name, x, [level] * len(x)), expected), name


def test_ops_mix_in_one_batch():
    torch.manual_seed(0)
    x = photos(4).repeat(10, 1, 1, 1)
    space = PaperSpace(all_ops=True)
    op = torch.randint(-1, len(space.names), (len(x),))
    level = space.level(op, 3)
    out, order = apply_ops(x, space.names, op, level, "bilinear", PAPER)
    for j, i in enumerate(order.tolist()):
        expected = x[i] if op[i] < 0 else pil_apply(space.names[op[i]], x[i:i + 1], level[i:i + 1])[0]
        assert torch.equal(out[j], expected), (space.names[op[i]], float(level[i]))


@pytest.mark.parametrize("severity", [1, 3, 10])
def test_levels_are_uniform_on_0_1_to_severity_at_every_application(severity):
    """sample_level: numpy's uniform(0.1, severity), drawn anew for every op of every chain; signed ops' directions
    are a fair coin, the others' levels are positive."""
    torch.manual_seed(0)
    space = PaperSpace(all_ops=True)
    op = torch.arange(len(space.names)).repeat(4000)  # every op 4000 times
    level = space.level(op, severity)
    assert level.dtype == torch.float64
    signed = space.signed[op]
    magnitude = level.abs()
    assert magnitude.min() >= 0.1 and magnitude.max() < severity
    assert (level[~signed] > 0).all() and abs((level[signed] < 0).double().mean() - 0.5) < 0.02
    deciles = ((magnitude - 0.1) / (severity - 0.1) * 10).long().bincount(minlength=10).double() / len(op)
    assert (deciles - 0.1).abs().max() < 0.01  # 3.5 sigma of a decile's frequency over 52,000 draws
    assert len(level.unique()) == len(level)  # a fresh draw per application


@pytest.mark.parametrize("all_ops, ops", [(True, ALL_OPS), (False, OPS)])
def test_augmix_paper_chains(all_ops, ops):
    """Depth 1-3 drawn per chain (np.random.randint(1, 4) in the paper's aug), ops uniform over the paper's list."""
    torch.manual_seed(0)
    n = 20_000
    space, stages = AugMix(severity=3, all_ops=all_ops).sample(n, 32, 32, torch.device("cpu"))
    assert space.names == ops and len(stages) == 3
    depth = sum((op >= 0).long() for op, _ in stages)
    assert all(abs((depth == d).double().mean() - 1 / 3) < 0.012 for d in (1, 2, 3))
    op, level = stages[0]
    assert all(abs((op == k).double().mean() - 1 / len(ops)) < 0.008 for k in range(len(ops)))
    assert level.abs().min() >= 0.1 and level.abs().max() < 3
    assert AugMix(chain_depth=2).sample(10, 32, 32, torch.device("cpu"))[1][1][0].ge(0).all()


def paper_image(image, severity=3, width=3):
    """cifar.py's `aug` (severity 3, width 3, depth 1-3, all ops) with augmentations.py's ops on a PIL image,
    numpy's RNG, without the normalisation (which commutes with the convex mix): float32 [32, 32, 3] in [0, 1]."""
    ws, m = np.float32(np.random.dirichlet([1] * width)), np.float32(np.random.beta(1, 1))
    mix = np.zeros((SIZE, SIZE, 3), np.float32)
    for i in range(width):
        image_aug = image.copy()
        for _ in range(np.random.randint(1, 4)):
            name = ALL_OPS[np.random.randint(len(ALL_OPS))]
            level = np.random.uniform(0.1, severity) * (-1 if np.random.uniform() > 0.5 else 1)
            image_aug = reference(name, image_aug, level)
        mix += ws[i] * np.asarray(image_aug, np.float32) / 255
    return (1 - m) * np.asarray(image, np.float32) / 255 + m * mix


def test_augmix_changes_images_as_much_as_the_papers():
    """End to end: the mean absolute pixel change per view agrees with the paper's aug on PIL (within 4 standard
    errors), and is larger than torchvision's magnitudes give."""
    np.random.seed(0)
    torch.manual_seed(0)
    x = photos(24).repeat(20, 1, 1, 1)
    clean = x.float() / 255

    def change(views):
        return (views - clean).abs().mean((1, 2, 3))

    theirs = change(torch.stack([torch.from_numpy(paper_image(Image.fromarray(xi.permute(1, 2, 0).numpy())))
                                 .permute(2, 0, 1) for xi in x]))
    paper, _ = build_augment(parse_augment([{"name": "augmix"}]), 10)(x, torch.zeros(len(x), dtype=torch.long))
    torchvision, _ = build_augment(parse_augment([{"name": "augmix", "magnitudes": "torchvision"}]), 10)(
        x, torch.zeros(len(x), dtype=torch.long))
    paper, torchvision = change(paper), change(torchvision)
    standard_error = ((paper.var() + theirs.var()) / len(x)).sqrt()
    assert abs(paper.mean() - theirs.mean()) < 4 * standard_error
    assert standard_error < 0.1 * theirs.mean()  # the check has teeth
    assert torchvision.mean() < paper.mean() - 4 * standard_error


@pytest.mark.parametrize("spec, words", [
    ({"magnitudes": "pil"}, ["magnitudes", "'paper'", "'torchvision'", "'pil'"]),
    ({"interpolation": "nearest"}, ["interpolation", "nearest", "magnitudes: torchvision"]),
])
def test_bad_magnitudes_are_one_line_usage_errors(spec, words):
    with pytest.raises(UsageError) as error:
        build_augment(parse_augment([{"name": "augmix", **spec}]), 10)
    message = str(error.value)
    assert "\n" not in message and all(word in message for word in words), message


def test_magnitudes_default_to_the_papers_and_torchvision_keeps_torchvisions_space():
    assert AugMix().magnitudes == "paper"
    space, _ = AugMix(magnitudes="torchvision").sample(4, 32, 32, torch.device("cpu"))
    assert hasattr(space, "bins") and "Identity" not in space.names and len(space.names) == 13
    build_augment(parse_augment([{"name": "augmix", "magnitudes": "torchvision", "interpolation": "nearest"}]), 10)
