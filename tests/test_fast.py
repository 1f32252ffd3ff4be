"""The fast path: design-space extensions, shipped fast recipes, EMA, lookahead, TTA, optimizer groups, resume."""
from __future__ import annotations


import numpy as np
import pytest
import torch
import torch.nn.functional as F

from budgetnet.config import EmaConfig, LookaheadConfig, OptimizerConfig, load_recipe
from budgetnet.data.cifar import from_arrays
from budgetnet.design.model import ResNet, count_trainable, init_whitening
from budgetnet.design.spec import ModelSpec, SpecError
from budgetnet.training.averaging import Lookahead, build_ema
from budgetnet.training.checkpoint import load_model
from budgetnet.training.loop import train
from budgetnet.training.optim import build_optimizer, build_scheduler, decay_weights
from budgetnet.training.rundir import RunFiles
from budgetnet.training.scoring import TTA_VIEWS, forward_passes, predict_logits, tta_views

from conftest import CLASSES, synthetic_arrays, tiny_recipe

FAST_RECIPES = ["fast", "best", "cpu", "small", "seed-fast"]
FAST_PATH = ["ema.enabled=true", "ema.decay=0.5", "ema.every=2", "lookahead.enabled=true", "lookahead.k=3",
             "lookahead.anneal=true", "tta=flip_translate", "optimizer.norm_lr_scale=4", "optimizer.nesterov=true",
             "optimizer.decoupled_weight_decay=true", "model.stem=whiten", "label_smoothing=0.1"]


@pytest.mark.parametrize("kw", [dict(stem="whiten"), dict(downsample="pool", blocks=[1, 0, 2], channels=[8, 16, 32]),
                                dict(stem="whiten", downsample="pool", blocks=[0, 1], channels=8, block="bottleneck",
                                     pool_size=2)])
def test_extended_designs_count_exactly(kw):
    spec = ModelSpec(**kw)
    model = ResNet(spec)
    assert spec.count_params() == count_trainable(model)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_zero_blocks_need_pool_downsampling():
    with pytest.raises(SpecError, match="downsample=pool"):
        ModelSpec(blocks=[1, 0]).validate()


def test_whitening_stem_whitens_patches_and_is_frozen():
    torch.manual_seed(0)
    model = ResNet(ModelSpec(stem="whiten", blocks=[1], channels=8, pool_size=32))
    images = torch.randn(200, 3, 32, 32) * torch.tensor([1.0, 3.0, 0.2]).view(1, 3, 1, 1)
    init_whitening(model, images, eps=0.0)
    out = F.conv2d(images, model.stem.weight)  # valid positions: every 2x2 patch
    half = out[:, :12].permute(0, 2, 3, 1).reshape(-1, 12)
    cov = half.T @ half / len(half)
    assert torch.allclose(cov, torch.eye(12), atol=1e-3)
    assert not any(p is model.stem.weight for p in model.parameters())


@pytest.mark.parametrize("name", FAST_RECIPES)
def test_fast_recipes_are_under_budget_and_train(name, tmp_path):
    recipe = load_recipe(name, ["epochs=1", "batch_size=32", "compile=false", "data.val_size=0", "eval_every=1"])
    assert recipe.model.count_params() < recipe.budget == 5_000_000
    assert count_trainable(ResNet(recipe.model)) == recipe.model.count_params()
    test_images, test_labels = synthetic_arrays(32, 1)
    data = from_arrays(synthetic_arrays(64, 0), None, (test_images, test_labels), CLASSES)
    summary = train(recipe, tmp_path / name, progress=False, data=data)
    assert summary.status == "finished"
    assert summary.final_test_acc == accuracy_by_hand(tmp_path / name, recipe, test_images, test_labels)


def accuracy_by_hand(run, recipe, images: np.ndarray, labels: np.ndarray) -> float:
    """Test accuracy of a run's saved model (the EMA when there is one) under the recipe's precision and TTA,
    computed without budgetnet's evaluation code (airbench's flip + one-pixel-translate TTA written out)."""
    model = load_model(run, "last")[0]
    mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
    std = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)
    x = (torch.from_numpy(images).float() / 255 - mean) / std
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    views = {"none": [(1.0, x)], "flip": [(0.5, x), (0.5, x.flip(-1))],
             "flip_translate": [(0.25, x), (0.25, x.flip(-1)), (0.125, padded[..., :32, :32]),
                                (0.125, padded[..., :32, :32].flip(-1)), (0.125, padded[..., 2:, 2:]),
                                (0.125, padded[..., 2:, 2:].flip(-1))]}[recipe.tta]
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=recipe.precision == "bf16"):
        logits = sum(w * model(v.contiguous(memory_format=torch.channels_last)).float() for w, v in views)
    return (logits.argmax(1).numpy() == labels).mean()


def test_seed_fast_trains_the_studys_exact_design():
    assert load_recipe("seed-fast").model == load_recipe("seed").model
    assert load_recipe("seed-fast").model.count_params() == 4_815_940


def test_ema_is_the_expected_average_of_the_weights():
    model = torch.nn.Linear(2, 1, bias=False)
    ema = build_ema(model, EmaConfig(enabled=True, decay=0.5, every=1))
    history = []
    for value in (1.0, 3.0, 7.0):
        model.weight.data.fill_(value)
        history.append(value)
        ema.update_parameters(model)
    expected = (1.0 * 0.5 + 3.0 * 0.5) * 0.5 + 7.0 * 0.5  # first update copies, then ema = 0.5 ema + 0.5 w
    assert torch.allclose(ema.module.weight, torch.full_like(model.weight, expected))
    assert not torch.equal(ema.module.weight, model.weight)


def test_lookahead_interpolates_every_k_steps():
    model = torch.nn.Linear(1, 1, bias=False)
    model.weight.data.fill_(0.0)
    la = Lookahead(model, LookaheadConfig(enabled=True, k=2, alpha=0.5), total_steps=10)
    model.weight.data.fill_(4.0)
    la.step(1)  # not a multiple of k: nothing happens
    assert model.weight.item() == 4.0
    la.step(2)  # slow = 0 + 0.5 (4 - 0) = 2, fast restarts there
    assert model.weight.item() == 2.0 and la.slow[0].item() == 2.0
    annealed = Lookahead(model, LookaheadConfig(enabled=True, k=2, alpha=0.2, anneal=True), total_steps=10)
    assert annealed.alpha_at(0) == 1.0 and annealed.alpha_at(10) == pytest.approx(0.2)


def test_tta_averages_flipped_and_translated_views(tiny_data):
    x = torch.rand(2, 3, 32, 32)
    views = tta_views(x, "flip")
    assert [w for w, _ in views] == [0.5, 0.5] and torch.equal(views[1][1], x.flip(-1))
    translate = tta_views(x, "flip_translate")
    assert sum(w for w, _ in translate) == pytest.approx(1.0) and len(translate) == 6
    assert torch.equal(translate[2][1][..., 1:, 1:], x[..., :-1, :-1])  # shifted down-right by one pixel
    torch.manual_seed(0)
    model = ResNet(ModelSpec(blocks=[1], channels=4, pool_size=32))
    images = tiny_data.test[0][:8]
    plain = predict_logits(model, images, tiny_data, 8, torch.device("cpu"))
    mirrored = predict_logits(model, images.flip(-1), tiny_data, 8, torch.device("cpu"))
    both = predict_logits(model, images, tiny_data, 8, torch.device("cpu"), tta="flip")
    assert torch.allclose(both, (plain + mirrored) / 2, atol=1e-5)


class Lopsided(torch.nn.Module):
    """Two logits, +-(left half's mean - right half's): a mirror negates them, so its flip TTA scores 0 (a
    tie), and an image's confidence grows with the imbalance. It counts the images it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += len(x)
        d = x[..., :16].mean((1, 2, 3)) - x[..., 16:].mean((1, 2, 3))
        return torch.stack([d, -d], 1)


def lopsided_images(n: int = 8) -> torch.Tensor:
    """uint8 images whose left half is brighter than the right by 10, 20, ... levels, in a shuffled order."""
    x = torch.full((n, 3, 32, 32), 100, dtype=torch.uint8)
    x[..., :16] += (torch.randperm(n, generator=torch.Generator().manual_seed(0)) * 10 + 10).to(torch.uint8).view(
        n, 1, 1, 1)
    return x


@pytest.mark.parametrize("fraction", [0.125, 0.25, 0.5, 0.99])
def test_tta_fraction_retests_only_the_least_confident_images(tiny_data, fraction):
    x, model = lopsided_images(), Lopsided()
    cpu = torch.device("cpu")
    plain = predict_logits(model, x, tiny_data, 3, cpu)
    model.seen = 0
    logits = predict_logits(model, x, tiny_data, 3, cpu, tta="flip", tta_fraction=fraction)
    k = int(8 * fraction)  # hiverge's count: int(n x fraction), the smallest imbalances
    unsure = plain[:, 0].abs().argsort()[:k]
    sure = plain[:, 0].abs().argsort()[k:]
    assert torch.equal(logits[sure], plain[sure])  # confident images keep their plain logits exactly
    assert torch.equal(logits[unsure], torch.zeros(k, 2))  # the others get the flip TTA's (a tie: 0)
    assert model.seen == forward_passes(8, "flip", fraction) == 8 + 2 * k


def test_tta_fraction_edges_are_plain_scoring_and_full_tta(tiny_data):
    torch.manual_seed(0)
    model = ResNet(ModelSpec(blocks=[1], channels=4, pool_size=32))
    images, cpu = tiny_data.test[0][:16], torch.device("cpu")
    plain = predict_logits(model, images, tiny_data, 8, cpu)
    full = predict_logits(model, images, tiny_data, 8, cpu, tta="flip_translate")
    assert torch.equal(predict_logits(model, images, tiny_data, 8, cpu, tta="flip_translate", tta_fraction=0.06),
                       plain)  # int(16 x 0.06) = 0 images retested
    every = predict_logits(model, images, tiny_data, 8, cpu, tta="flip_translate", tta_fraction=1.0)
    assert torch.allclose(every, full, atol=1e-5) and not torch.allclose(full, plain, atol=1e-3)
    assert [forward_passes(16, "flip_translate", f) for f in (None, 0.06, 0.25, 1.0)] == [96, 16, 40, 112]
    assert all(len(tta_views(images.float(), tta)) == views for tta, views in TTA_VIEWS.items())


@pytest.mark.parametrize("overrides, message", [
    (["tta_fraction=0"], "tta_fraction=0.0 must be in (0, 1]"),
    (["tta_fraction=1.5"], "tta_fraction=1.5 must be in (0, 1]"),
    (["tta_fraction=0.25", "tta=none"], "tta_fraction=0.25 needs test-time augmentation: set tta"),
    (["tta_fraction=0.25"], None),
])
def test_tta_fraction_is_validated(overrides, message):
    recipe = load_recipe("small", overrides)
    if message is None:
        recipe.validate()
        return
    with pytest.raises(ValueError) as info:
        recipe.validate()
    assert message in str(info.value)


def test_norm_parameters_get_their_own_lr_and_decoupled_decay():
    model = ResNet(ModelSpec(blocks=[1], channels=4, pool_size=32))
    opt = build_optimizer(model, OptimizerConfig(lr=0.1, weight_decay=0.01, norm_lr_scale=4.0, norm_weight_decay=0.0,
                                                 decoupled_weight_decay=True))
    weights, norms = opt.param_groups
    assert weights["lr"] == 0.1 and norms["lr"] == pytest.approx(0.4)
    assert all(p.ndim > 1 for p in weights["params"]) and all(p.ndim == 1 for p in norms["params"])
    assert weights["weight_decay"] == 0 and weights["decoupled_wd"] == 0.01 and norms["decoupled_wd"] == 0.0
    before = [p.detach().clone() for p in weights["params"]]
    decay_weights(opt)
    assert all(torch.allclose(p, b * (1 - 0.1 * 0.01)) for p, b in zip(weights["params"], before))


def test_resume_is_exact_with_ema_and_lookahead(tiny_data, tmp_path):
    recipe = tiny_recipe(*FAST_PATH, "epochs=2")
    straight = train(recipe, tmp_path / "a", progress=False, data=tiny_data)
    rows = []

    def stop_after_one(row):
        rows.append(row)
        if row.epoch == 1:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train(recipe, tmp_path / "b", progress=False, data=tiny_data, on_epoch=stop_after_one)
    assert [r.epoch for r in rows] == [1]  # stopped after its first epoch, as a kill would
    first_straight = RunFiles(tmp_path / "a").read_metrics()[0]
    assert (rows[0].train_loss, rows[0].test_loss, rows[0].test_acc) == \
        (first_straight.train_loss, first_straight.test_loss, first_straight.test_acc)
    resumed = train(recipe, tmp_path / "b", resume=True, progress=False, data=tiny_data)
    assert resumed.final_test_acc == straight.final_test_acc
    a = torch.load(tmp_path / "a" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=True)
    for key in ("model", "train_model"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key])
    assert all(torch.equal(x, y) for x, y in zip(a["lookahead"]["slow"], b["lookahead"]["slow"]))


def test_fast_path_matches_a_plain_loop(tmp_path):
    """budgetnet's loop and a textbook per-image loop reach the same accuracy on a small learnable problem."""
    train_arrays, test_arrays = synthetic_arrays(1024, 0), synthetic_arrays(512, 1)
    data = from_arrays(train_arrays, None, test_arrays, CLASSES)
    recipe = tiny_recipe("epochs=3", "precision=fp32")
    fast = train(recipe, tmp_path / "fast", progress=False, data=data).final_test_acc

    torch.manual_seed(0)
    model = ResNet(recipe.model)
    opt = build_optimizer(model, recipe.optimizer)  # the same optimizer and schedule, a textbook data path
    sched = build_scheduler(opt, recipe.schedule, 3 * (len(train_arrays[0]) // 64), len(train_arrays[0]) // 64)
    x, y = torch.as_tensor(train_arrays[0]), torch.as_tensor(train_arrays[1])
    rng = np.random.default_rng(0)
    for _ in range(3):
        for idx in np.array_split(rng.permutation(len(x)), len(x) // 64):
            batch = []
            for i in idx:  # per-image augmentation: pad-4 random crop and flip
                img = F.pad(x[i].float() / 255, (4, 4, 4, 4))
                dy, dx = rng.integers(0, 9, 2)
                img = img[:, dy:dy + 32, dx:dx + 32]
                batch.append(img.flip(-1) if rng.random() < 0.5 else img)
            loss = F.cross_entropy(model(data.normalize(torch.stack(batch))), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    plain = (predict_logits(model, data.test[0], data, 256, torch.device("cpu")).argmax(1) == data.test[1]).float()
    assert fast > 0.5 and abs(fast - plain.mean().item()) < 0.1


def test_flops_per_image_match_the_convolutions_counted_by_hand(capsys):
    from budgetnet.cli import main
    from budgetnet.design.model import flops_per_image

    spec = ModelSpec(blocks=[1], channels=4, pool_size=32)  # stem 3->4, one basic block 4->4, fc 4->10
    stem, block, fc = 2 * 9 * 3 * 4 * 32 * 32, 2 * (2 * 9 * 4 * 4 * 32 * 32), 2 * 4 * 10
    flops = flops_per_image(spec)
    assert flops["forward"] == stem + block + fc
    # backward: a weight gradient for every layer, an input gradient for every layer but the stem (the image)
    assert flops["forward_backward"] == 3 * (stem + block + fc) - stem
    assert main(["params", "--recipe", "seed"]) == 0
    assert "0.479 GFLOP per 32x32 image forward, 1.435 forward+backward" in capsys.readouterr().out


def test_backend_settings_apply_on_cuda_only(monkeypatch):
    from budgetnet.training.runtime import compile_model, configure_backend

    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    configure_backend(torch.device("cpu"))
    assert torch.backends.cudnn.benchmark is False
    configure_backend(torch.device("cuda"))  # flags only: no GPU is needed to set them
    assert torch.backends.cudnn.benchmark is True and torch.get_float32_matmul_precision() == "high"
    torch.set_float32_matmul_precision("highest")
    model = torch.nn.Linear(2, 2)
    assert compile_model(model, False, "reduce-overhead") is model


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_optimizers_are_fused_on_cuda_only(name):
    model = ResNet(ModelSpec(blocks=[1], channels=4, pool_size=32))
    assert not build_optimizer(model, OptimizerConfig(name=name)).defaults["fused"]
    if torch.cuda.is_available():
        assert build_optimizer(model.cuda(), OptimizerConfig(name=name)).defaults["fused"]


@pytest.mark.parametrize("policy", [{"name": "crop", "padding": 4, "padding_mode": "reflect"}, {"name": "flip"},
                                    {"name": "translate"}, {"name": "cutout"}, {"name": "brightness_contrast"},
                                    {"name": "autoaugment"}, {"name": "randaugment"}, {"name": "trivialaugment"},
                                    {"name": "augmix", "jsd": True}, {"name": "mixup"}, {"name": "cutmix"}])
def test_augmentation_never_reads_the_images_device(policy):
    """A meta tensor has no values: any .item(), .tolist() or bool() of device data (a host sync on the GPU)
    raises, so the batch runs through every policy only if each step can be queued without waiting."""
    from budgetnet.data.augment import build_augment
    from budgetnet.data.policies import parse_augment

    augment = build_augment(parse_augment([policy]), num_classes=10)
    images = torch.empty(16, 3, 32, 32, dtype=torch.uint8, device="meta")
    views, targets = augment(images, torch.empty(16, dtype=torch.long, device="meta"))
    assert views.shape == (16 * augment.num_views, 3, 32, 32) and views.dtype == torch.float32
