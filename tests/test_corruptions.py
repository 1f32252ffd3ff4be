import colorsys
import io

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from budgetnet.evaluation import corruptions
from budgetnet.evaluation.corruptions import (CORRUPTIONS, FROST_INSTALL, FrostUnavailable, corrupt, corruption_suite,
                                              frost_photographs, generated_dir, load_cifar10c, plot_corruption_heatmap)

SEVERITIES = (1, 2, 3, 4, 5)
PHOTOGRAPHS = pytest.mark.skipif(frost_photographs() is None,
                                 reason=f"frost needs the photographs of the imagecorruptions package: {FROST_INSTALL}")


def names(*names: str) -> list:
    """Corruption names as test parameters, frost skipped where its photographs are not installed."""
    return [pytest.param(n, marks=PHOTOGRAPHS) if n == "frost" else n for n in names]


def realish(n: int = 8, seed: int = 0) -> np.ndarray:
    """Natural-looking uint8 images [n, 32, 32, 3]: smooth colour fields with a sharp vertical edge."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=(n, 32, 32, 3)), sigma=(0, 3, 3, 0))
    field = (field - field.min()) / (field.max() - field.min())
    columns = np.arange(32)[None, None, :, None]
    edge = (columns + rng.integers(-8, 8, (n, 1, 1, 1)) > 16) * rng.uniform(-0.3, 0.3, (n, 1, 1, 3))
    return (np.clip(0.2 + 0.6 * field + edge, 0, 1) * 255).astype(np.uint8)


def flat(value: int, n: int = 4) -> np.ndarray:
    return np.full((n, 32, 32, 3), value, dtype=np.uint8)


def damage(name: str, images: np.ndarray) -> list[float]:
    """Mean absolute difference to the clean images at each severity."""
    return [np.abs(corrupt(images, name, s).astype(int) - images).mean() for s in SEVERITIES]


def high_frequency_energy(images: np.ndarray) -> float:
    """Mean squared difference between vertically and horizontally adjacent pixels."""
    x = images.astype(float)
    return float(np.mean(np.diff(x, axis=1) ** 2) + np.mean(np.diff(x, axis=2) ** 2))


def test_the_fifteen_corruptions_in_standard_order():
    assert CORRUPTIONS == ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
                           "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
                           "elastic_transform", "pixelate", "jpeg_compression")


@pytest.mark.parametrize("name", names(*CORRUPTIONS))
def test_shape_dtype_determinism_and_change(name):
    images = realish(4)
    for severity in SEVERITIES:
        out = corrupt(images, name, severity, seed=3)
        assert out.dtype == np.uint8 and out.shape == images.shape
        assert np.array_equal(out, corrupt(images, name, severity, seed=3))
        assert not np.array_equal(out, images)
    assert corrupt(images[:0], name, 1).shape == (0, 32, 32, 3)


@pytest.mark.parametrize("name", names("gaussian_noise", "shot_noise", "impulse_noise", "glass_blur", "motion_blur",
                                  "snow", "frost", "fog", "elastic_transform"))
def test_random_corruptions_depend_on_the_seed(name):
    images = realish(4)
    assert not np.array_equal(corrupt(images, name, 3, seed=0), corrupt(images, name, 3, seed=1))


@pytest.mark.parametrize("severity, std", list(zip(SEVERITIES, [0.04, 0.06, 0.08, 0.09, 0.10])))
def test_gaussian_noise_std_matches_the_constant(severity, std):
    out = corrupt(flat(128, n=64), "gaussian_noise", severity)
    noise = (out.astype(float) + 0.5 - 128) / 255  # + 0.5 undoes the mean shift of truncation to uint8
    assert abs(noise.mean()) < 0.002
    assert noise.std() == pytest.approx(np.sqrt(std**2 + 1 / 12 / 255**2), rel=0.02)


@pytest.mark.parametrize("severity, photons", list(zip(SEVERITIES, [500, 250, 100, 75, 50])))
def test_shot_noise_is_poisson_with_the_constant(severity, photons):
    p = 102 / 255
    out = corrupt(flat(102, n=64), "shot_noise", severity).astype(float) / 255
    # Poisson(p * c) / c, truncated to uint8: mean p (minus <1/255), variance p / c
    assert out.mean() == pytest.approx(p, abs=1 / 255)
    assert out.var() == pytest.approx(p / photons, rel=0.05)


@pytest.mark.parametrize("severity, amount", list(zip(SEVERITIES, [0.01, 0.02, 0.03, 0.05, 0.07])))
def test_impulse_noise_flips_the_published_share_to_salt_or_pepper(severity, amount):
    out = corrupt(flat(100, n=64), "impulse_noise", severity)
    changed = out != 100
    assert changed.mean() == pytest.approx(amount, rel=0.1)
    assert set(np.unique(out[changed])) == {0, 255}
    assert (out[changed] == 255).mean() == pytest.approx(0.5, abs=0.05)


@pytest.mark.parametrize("severity, c", list(zip(SEVERITIES, [0.05, 0.1, 0.15, 0.2, 0.3])))
def test_brightness_adds_c_to_hsv_value(severity, c):
    images = realish(1)[:, :6, :6]
    images = np.pad(images, ((0, 0), (0, 26), (0, 26), (0, 0)), mode="wrap")
    out = corrupt(images, "brightness", severity)
    for pixel, got in zip(images.reshape(-1, 3)[:50] / 255, out.reshape(-1, 3)[:50]):
        h, s, v = colorsys.rgb_to_hsv(*pixel)
        expected = np.clip(colorsys.hsv_to_rgb(h, s, min(v + c, 1.0)), 0, 1) * 255
        assert np.array_equal(got, expected.astype(np.uint8))


@pytest.mark.parametrize("severity, c", list(zip(SEVERITIES, [0.75, 0.5, 0.4, 0.3, 0.15])))
def test_contrast_scales_around_the_channel_means(severity, c):
    images = realish(3)
    x = images / 255.0
    means = x.mean(axis=(1, 2), keepdims=True)
    expected = (np.clip((x - means) * c + means, 0, 1) * 255).astype(np.uint8)
    assert np.array_equal(corrupt(images, "contrast", severity), expected)


@pytest.mark.parametrize("severity, factor", list(zip(SEVERITIES, [0.95, 0.9, 0.85, 0.75, 0.65])))
def test_pixelate_is_box_resize_down_and_up(severity, factor):
    images = realish(3)
    size = int(32 * factor)
    expected = [np.asarray(Image.fromarray(im).resize((size, size), Image.BOX).resize((32, 32), Image.BOX))
                for im in images]
    assert np.array_equal(corrupt(images, "pixelate", severity), np.stack(expected))


@pytest.mark.parametrize("severity, quality", list(zip(SEVERITIES, [80, 65, 58, 50, 40])))
def test_jpeg_compression_is_pil_jpeg_at_the_published_quality(severity, quality):
    images = realish(3)
    expected = []
    for im in images:
        buffer = io.BytesIO()
        Image.fromarray(im).save(buffer, format="JPEG", quality=quality)
        expected.append(np.asarray(Image.open(buffer)))
    assert np.array_equal(corrupt(images, "jpeg_compression", severity), np.stack(expected))


@pytest.mark.parametrize("name", ["defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "elastic_transform",
                                  "pixelate"])
def test_blurs_and_warps_keep_a_flat_image(name):
    images = flat(137)
    for severity in SEVERITIES:
        # within one grey level: like make_cifar_c, values are truncated, and 137/255*255 may land on 136.99..
        assert np.abs(corrupt(images, name, severity).astype(int) - 137).max() <= 1


@pytest.mark.parametrize("name", ["defocus_blur", "motion_blur", "zoom_blur"])
def test_blurs_remove_more_high_frequencies_as_severity_grows(name):
    images = realish(16)
    energies = [high_frequency_energy(images)] + [high_frequency_energy(corrupt(images, name, s)) for s in SEVERITIES]
    assert all(later < earlier for earlier, later in zip(energies, energies[1:])), energies


# glass_blur, frost and elastic_transform are not monotone in pixel difference under the published constants:
# glass_blur trades blur for shuffle passes (severity 4 shuffles twice with less blur than severity 3), frost
# darkens the image (c0 < 1) while adding texture, elastic_transform shrinks the random affine warp as the
# local displacement grows. motion_blur severities 3 and 4 share sigma = 2 and differ only in a negligible tail.
MONOTONE = [n for n in CORRUPTIONS if n not in ("glass_blur", "frost", "elastic_transform", "motion_blur")]


@pytest.mark.parametrize("name", MONOTONE)
def test_damage_grows_with_severity(name):
    values = damage(name, realish(8))
    assert all(later > earlier for earlier, later in zip(values, values[1:])), values


@pytest.mark.parametrize("name", names("glass_blur", "frost", "motion_blur"))
def test_most_severe_damages_more_than_least(name):
    values = damage(name, realish(8))
    assert values[4] > values[0], values


def frost_by_hand(folder) -> dict[str, np.ndarray]:
    """make_cifar_c's frost layers computed independently: each photograph in RGB, resized by 0.2 as cv2.resize's
    INTER_LINEAR does (half-pixel centres: torch's bilinear with align_corners=False and the same scale), all six
    photographs of its list although it draws from the first five."""
    import torch
    import torch.nn.functional as F
    layers = {}
    for name in ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg"):
        photo = torch.tensor(np.asarray(Image.open(folder / name).convert("RGB"))).permute(2, 0, 1)[None].double()
        small = F.interpolate(photo, scale_factor=0.2, mode="bilinear", align_corners=False,
                              recompute_scale_factor=False)
        layers[name] = small[0].permute(1, 2, 0).round().numpy()
    return layers


@PHOTOGRAPHS
def test_frost_blends_a_32x32_crop_of_one_of_the_first_five_photographs_with_the_published_weights():
    layers = frost_by_hand(frost_photographs())
    images = realish(12, seed=3).astype(np.float64)
    weights = [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)]
    used = []
    same = {name: next(n for n in layers if np.array_equal(layers[n], layer)) for name, layer in layers.items()}
    assert same["frost3.png"] == "frost2.png"  # the same picture encoded twice: make_cifar_c draws it 2 times in 5
    for severity in (1, 5):
        c0, c1 = weights[severity - 1]
        out = corrupt(images.astype(np.uint8), "frost", severity, seed=7)
        for x, y in zip(images, out):
            found = []
            for name, layer in layers.items():  # every crop randint(0, side - 32) can start, row and column
                h, w = layer.shape[0] - 32, layer.shape[1] - 32
                corner = np.floor(np.clip(c0 * x[0, 0] + c1 * layer[:h, :w], 0, 255))  # np.uint8 truncates
                for r, c in zip(*np.nonzero((corner == y[0, 0]).all(-1))):
                    if np.array_equal(np.floor(np.clip(c0 * x + c1 * layer[r:r + 32, c:c + 32], 0, 255)), y):
                        found.append((same[name], r, c))
            assert len(set(found)) == 1, found  # the image is the blend of exactly one crop
            used.append(found[0][0])
    assert "frost6.jpg" not in used and len(set(used)) >= 3  # randint(5): frost6 is in the list but never drawn


def test_without_the_photographs_frost_says_what_to_install_and_the_others_run(monkeypatch, capsys):
    monkeypatch.setattr(corruptions, "frost_photographs", lambda: None)
    corruptions._frost_layers.cache_clear()
    try:
        with pytest.raises(FrostUnavailable, match="^frost needs the frost photographs of the imagecorruptions "
                                                   "package: pip install --no-deps imagecorruptions$"):
            corrupt(flat(0), "frost", 1)
        result = corruption_suite(realish(2), np.arange(2), lambda im, y: 0.5, names=("fog", "frost", "contrast"),
                                  severities=(1,), progress=False)
    finally:
        corruptions._frost_layers.cache_clear()  # the photographs, where installed, for the other tests
    assert list(result["per_corruption"]) == ["fog", "contrast"] and result["generated"] == ["fog", "contrast"]
    assert result["skipped"] == {"frost": f"the frost photographs are not installed: {FROST_INSTALL}"}
    assert result["read"] == {}
    assert capsys.readouterr().err == ("note: frost skipped: it needs the frost photographs of the imagecorruptions "
                                       "package: pip install --no-deps imagecorruptions\n")


@PHOTOGRAPHS
def test_the_suite_says_what_it_generated_and_what_it_read_from_where(tmp_path):
    result = corruption_suite(realish(2), np.arange(2), lambda im, y: 0.5, names=("fog", "frost"), severities=(1,),
                              progress=False)
    assert result["generated"] == ["fog", "frost"] and result["skipped"] == {}
    assert result["read"] == {"frost": str(frost_photographs())}
    np.save(tmp_path / "fog.npy", np.zeros((5, 32, 32, 3), np.uint8))
    np.save(tmp_path / "labels.npy", np.zeros(5, np.int64))
    released = corruption_suite(None, None, lambda im, y: 0.5, names=("fog",), severities=(1,), progress=False,
                                cifar10c_dir=tmp_path)
    assert released["generated"] == [] and released["read"] == {"fog": str(tmp_path / "fog.npy")}


def test_glass_blur_at_tiny_sigma_copies_pixels_from_up_left_neighbours():
    # severity 1 blurs with sigma 0.05 (a no-op on uint8), so each pixel in rows and columns 2..31 takes the
    # value of itself or its neighbour above, left or above-left, and rows and columns 0..1 stay as they were
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    out = corrupt(images, "glass_blur", 1)
    assert np.array_equal(out[:, :2], images[:, :2]) and np.array_equal(out[:, :, :2], images[:, :, :2])
    candidates = np.stack([images[:, 2 - dy:32 - dy, 2 - dx:32 - dx] for dy in (0, 1) for dx in (0, 1)])
    assert np.all((candidates == out[None, :, 2:, 2:]).all(axis=-1).any(axis=0))


def test_unknown_name_suggests_the_closest():
    with pytest.raises(ValueError, match="gaussian_noise") as err:
        corrupt(realish(1), "gausian_noise", 1)
    assert "Did you mean" in str(err.value) and "jpeg_compression" in str(err.value)


@pytest.mark.parametrize("severity", [0, 6, 2.0, True, "3"])
def test_bad_severity(severity):
    with pytest.raises(ValueError, match="severity"):
        corrupt(realish(1), "contrast", severity)


@pytest.mark.parametrize("images, match", [
    (np.zeros((2, 32, 32, 3), dtype=np.float32), "uint8"),
    (np.zeros((2, 3, 32, 32), dtype=np.uint8), "NCHW"),
    (np.zeros((32, 32, 3), dtype=np.uint8), "uint8"),
    (np.zeros((2, 28, 28, 3), dtype=np.uint8), "uint8"),
])
def test_bad_images(images, match):
    with pytest.raises(ValueError, match=match):
        corrupt(images, "contrast", 1)


def fake_release(directory, n: int = 4) -> None:
    """A tiny CIFAR-10-C: severity s images filled with value 10 * s + index, labels 0..5n-1 mod 10."""
    images = np.zeros((5 * n, 32, 32, 3), dtype=np.uint8)
    for s in SEVERITIES:
        for i in range(n):
            images[(s - 1) * n + i] = 10 * s + i
    for name in ("contrast", "fog"):
        np.save(directory / f"{name}.npy", images)
    np.save(directory / "labels.npy", (np.arange(5 * n) % 10).astype(np.uint8))


def test_load_cifar10c_slices_one_severity(tmp_path):
    fake_release(tmp_path)
    images, labels = load_cifar10c(tmp_path, "fog", 3)
    assert images.shape == (4, 32, 32, 3) and images.dtype == np.uint8
    assert [im[0, 0, 0] for im in images] == [30, 31, 32, 33]
    assert labels.tolist() == [8, 9, 0, 1] and labels.dtype == np.int64


def test_load_cifar10c_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="fog.npy"):
        load_cifar10c(tmp_path, "fog", 1)
    fake_release(tmp_path)
    with pytest.raises(ValueError, match="unknown corruption"):
        load_cifar10c(tmp_path, "fogg", 1)
    (tmp_path / "snow.npy").write_bytes(b"not a numpy file")
    with pytest.raises(ValueError, match="snow.npy"):
        load_cifar10c(tmp_path, "snow", 1)
    np.save(tmp_path / "snow.npy", np.zeros((7, 32, 32, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="five severities"):
        load_cifar10c(tmp_path, "snow", 1)
    np.save(tmp_path / "snow.npy", np.zeros((10, 32, 32, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="labels.npy"):
        load_cifar10c(tmp_path, "snow", 1)


def test_suite_on_release_files(tmp_path):
    fake_release(tmp_path)
    seen = []

    def evaluate(images, labels):
        seen.append((len(images), len(labels)))
        return float(images[:, 0, 0, 0].mean()) / 100  # 0.1 * severity + mean index / 100

    result = corruption_suite(None, None, evaluate, names=("contrast", "fog"), severities=(1, 5),
                              cifar10c_dir=tmp_path, progress=False, limit=2)
    assert seen == [(2, 2)] * 4
    assert result["per_corruption"]["fog"] == pytest.approx({"1": 0.105, "5": 0.505, "mean": 0.305})
    assert result["corruption_accuracy"] == pytest.approx(0.305)
    assert result["corruption_error"] == pytest.approx(0.695)
    assert result["source"] == "cifar10c" and result["num_images"] == 2


def test_suite_on_generated_corruptions():
    images, labels = realish(6), np.arange(6)

    def evaluate(corrupted, targets):  # an "accuracy" that falls as the images drift from the clean ones
        assert np.array_equal(targets, labels[:len(corrupted)])
        return 1 - np.abs(corrupted.astype(int) - images[:len(corrupted)]).mean() / 255

    result = corruption_suite(images, labels, evaluate, names=("contrast", "brightness"), progress=False, limit=4)
    per = result["per_corruption"]
    assert list(per) == ["contrast", "brightness"] and list(per["contrast"]) == ["1", "2", "3", "4", "5", "mean"]
    assert per["contrast"]["5"] < per["contrast"]["1"] < 1
    assert per["brightness"]["mean"] == pytest.approx(np.mean([per["brightness"][str(s)] for s in SEVERITIES]))
    assert result["corruption_accuracy"] == pytest.approx((per["contrast"]["mean"] + per["brightness"]["mean"]) / 2)
    assert result["source"] == "generated" and result["num_images"] == 4
    with pytest.raises(ValueError, match="severity"):
        corruption_suite(images, labels, evaluate, severities=(0,), progress=False)
    with pytest.raises(ValueError, match="same length"):
        corruption_suite(images, labels[:3], evaluate, progress=False)


def fake_result(level: float) -> dict:
    per = {name: {**{str(s): 1 - level * s * (i + 1) / 80 for s in SEVERITIES}} for i, name in enumerate(CORRUPTIONS)}
    for accs in per.values():
        accs["mean"] = float(np.mean(list(accs.values())))
    mean = float(np.mean([accs["mean"] for accs in per.values()]))
    return {"corruption_accuracy": mean, "corruption_error": 1 - mean, "per_corruption": per}


def test_heatmaps_are_written(tmp_path):
    one = plot_corruption_heatmap(fake_result(1.0), tmp_path / "one.png")
    many = plot_corruption_heatmap([("small", fake_result(1.0)), ("large", fake_result(0.5))], tmp_path / "a" / "many.png")
    for path in (one, many):
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) > 300
    with pytest.raises(ValueError):
        plot_corruption_heatmap([], tmp_path / "none.png")


def test_generated_corruptions_are_cached_in_the_release_layout_and_read_back(tmp_path, monkeypatch):
    images, labels = realish(6), np.arange(6) % 3
    names = ("gaussian_noise", "glass_blur", "jpeg_compression")
    seen = []

    def evaluate(corrupted, targets):  # records what it is given, so that calls can be compared
        seen.append((corrupted.copy(), targets.copy()))
        return float(corrupted.mean()) / 255

    plain = corruption_suite(images, labels, evaluate, names=names, severities=(2, 5), progress=False, seed=4)
    fresh = seen[:]
    seen.clear()
    first = corruption_suite(images, labels, evaluate, names=names, severities=(2, 5), progress=False, seed=4,
                             cache_dir=tmp_path)
    assert first == plain and len(seen) == len(fresh)
    for (a, y), (b, z) in zip(seen, fresh):  # exactly today's generator
        assert np.array_equal(a, b) and np.array_equal(y, z)

    folder = generated_dir(images, labels, 4, tmp_path)
    assert folder.name == "CIFAR-10-C" and sorted(p.name for p in folder.iterdir()) == sorted(
        [f"{n}.npy" for n in names] + ["labels.npy"])  # no temporary file left behind
    for name in names:  # all five severities, stacked as the release stacks them
        for severity in SEVERITIES:
            cached, targets = load_cifar10c(folder, name, severity)
            assert np.array_equal(cached, corrupt(images, name, severity, seed=4)) and np.array_equal(targets, labels)

    monkeypatch.setattr("budgetnet.evaluation.corruptions.corrupt", lambda *a, **k: pytest.fail("generated again"))
    seen.clear()
    assert corruption_suite(images, labels, evaluate, names=names, severities=(2, 5), progress=False, seed=4,
                            cache_dir=tmp_path) == plain  # read from the cache
    for (a, _), (b, _) in zip(seen, fresh):
        assert np.array_equal(a, b)
    others = [generated_dir(images, labels, 5, tmp_path), generated_dir(images[:5], labels[:5], 4, tmp_path),
              generated_dir(images, (labels + 1) % 3, 4, tmp_path)]
    assert len({folder, *others}) == 4  # another seed, other images or other labels: another folder
    monkeypatch.setattr("budgetnet.evaluation.corruptions.GENERATOR_VERSION", corruptions.GENERATOR_VERSION + 1)
    assert generated_dir(images, labels, 4, tmp_path) != folder  # a changed generator never reads the old files


def test_a_cache_that_cannot_be_written_falls_back_to_generating(tmp_path, capsys):
    images, labels = realish(4), np.arange(4)
    (tmp_path / "file").write_text("not a folder")
    evaluate = lambda corrupted, targets: float(corrupted.mean()) / 255
    plain = corruption_suite(images, labels, evaluate, names=("fog", "snow"), severities=(1,), progress=False)
    assert corruption_suite(images, labels, evaluate, names=("fog", "snow"), severities=(1,), progress=False,
                            cache_dir=tmp_path / "file") == plain
    err = capsys.readouterr().err
    assert err.count("note: cannot cache the generated corruptions in") == 1 and "generating them in memory" in err


def test_a_damaged_cache_entry_is_generated_again_not_reported(tmp_path, capsys):
    images, labels = realish(3), np.arange(3)
    evaluate = lambda corrupted, targets: float(corrupted.mean()) / 255
    plain = corruption_suite(images, labels, evaluate, names=("fog",), severities=(2,), progress=False)
    corruption_suite(images, labels, evaluate, names=("fog",), severities=(2,), progress=False, cache_dir=tmp_path)
    cached = generated_dir(images, labels, 0, tmp_path) / "fog.npy"
    whole = cached.read_bytes()
    cached.write_bytes(whole[:len(whole) // 2])  # a crash or a full disk mid-write, or a copy cut short
    capsys.readouterr()
    assert corruption_suite(images, labels, evaluate, names=("fog",), severities=(2,), progress=False,
                            cache_dir=tmp_path) == plain
    assert capsys.readouterr().err == (f"note: {cached} in the corruption cache is damaged (truncated, or not the "
                                       "images it should hold); generating it again\n")
    assert cached.read_bytes() == whole
