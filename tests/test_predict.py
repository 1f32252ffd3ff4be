"""predict: any size and mode of PNG/JPEG, top-k probabilities equal to the model's softmax, class names from the
checkpoint (no data set), JSON output, unreadable and oversized files named."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from budgetnet.cli import main
from budgetnet.training.checkpoint import load_model
from conftest import CLASSES, synthetic_arrays
from test_export import make_run

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)  # CIFAR-10's, written out independently


def softmax_of(run, path) -> torch.Tensor:
    """The class probabilities of one image file, computed without budgetnet's predict or export code."""
    image = Image.open(path).convert("RGB").resize((32, 32), Image.Resampling.BILINEAR)
    x = torch.tensor(np.asarray(image), dtype=torch.float32).permute(2, 0, 1)[None] / 255
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    model, _, _ = load_model(run)
    with torch.no_grad():
        return model(x).softmax(1)[0]


def test_predict_json_equals_the_models_softmax_without_the_data_set(tmp_path, capsys, monkeypatch, trained_run):
    monkeypatch.setenv("BUDGETNET_DATA", str(tmp_path / "no-data-here"))  # the class names come from the checkpoint
    run = trained_run
    x, _ = synthetic_arrays(2, seed=9)  # images of the kind the model was trained on, then resized and re-moded
    Image.fromarray(x[0].transpose(1, 2, 0)).convert("RGBA").resize((70, 50)).save(tmp_path / "big.png")
    Image.fromarray(x[1].transpose(1, 2, 0)).convert("L").save(tmp_path / "grey.jpg")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    files = [str(tmp_path / n) for n in ("big.png", "broken.png", "grey.jpg")]
    rc = main(["predict", str(run), *files, "--json", "--top-k", "4"])
    out, err = capsys.readouterr()
    assert rc == 2
    assert "broken.png: not a readable image" in err and "resized from 70x50 to 32x32" in err
    preds = json.loads(out)
    assert [p["file"] for p in preds] == [files[0], files[2]]
    for p in preds:
        expected = softmax_of(run, p["file"])
        assert expected.max() > 0.3  # the model tells the classes apart, so the check has teeth
        top = expected.topk(4)
        assert [t["label"] for t in p["top_k"]] == [CLASSES[i] for i in top.indices]
        assert [t["probability"] for t in p["top_k"]] == pytest.approx(top.values.tolist(), abs=2e-6)
        assert p["label"] == CLASSES[expected.argmax()] and p["probability"] == p["top_k"][0]["probability"]

    assert main(["predict", str(run), files[0]]) == 0
    assert capsys.readouterr().out.startswith(f"{files[0]}: {CLASSES[softmax_of(run, files[0]).argmax()]} ")


def test_predict_text_lines(tmp_path, capsys, trained_run):
    run = trained_run
    Image.fromarray(synthetic_arrays(1, seed=3)[0][0].transpose(1, 2, 0)).save(tmp_path / "grey.png")
    assert main(["predict", str(run), str(tmp_path / "grey.png"), "--top-k", "2"]) == 0
    expected = softmax_of(run, tmp_path / "grey.png").topk(2)
    line = ", ".join(f"{CLASSES[i]} {q:.1%}" for q, i in zip(expected.values.tolist(), expected.indices.tolist()))
    assert capsys.readouterr().out == f"{tmp_path / 'grey.png'}: {line}\n"


def test_a_checkpoint_without_class_names_reads_them_from_the_data(tmp_path, fake_cifar, capsys):
    run = make_run(tmp_path, classes=None)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "black.png")
    assert main(["predict", str(run), str(tmp_path / "black.png"), "--json", "--data", str(fake_cifar)]) == 0
    out, err = capsys.readouterr()
    assert "was written by budgetnet 0.1.0, which stored no class names: reading them from the cifar10 files" in err
    assert json.loads(out)[0]["label"] == CLASSES[softmax_of(run, tmp_path / "black.png").argmax()]


@pytest.mark.parametrize("side", [12_000, 20_000])  # PIL warns on the first and raises on the second
def test_an_oversized_image_is_refused_before_decoding(tmp_path, capsys, side):
    run = make_run(tmp_path)
    Image.new("1", (side, side)).save(tmp_path / "huge.png")  # a few kB on disk, side^2 pixels decoded
    assert main(["predict", str(run), str(tmp_path / "huge.png")]) == 2
    assert capsys.readouterr().err == (f"budgetnet predict: error: {tmp_path / 'huge.png'}: more than "
                                       f"{Image.MAX_IMAGE_PIXELS:,} pixels, too large to decode safely; resize it "
                                       "first (the model sees 32x32)\n")


def gradient_16bit() -> np.ndarray:
    """A 32x32 16-bit greyscale gradient covering 0..65535, and nothing near white but its last pixels."""
    return np.round(np.linspace(0, 65535, 32 * 32)).astype(np.uint16).reshape(32, 32)


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_a_16_bit_image_is_scaled_to_8_bits_not_clipped_to_white(tmp_path, mode):
    from budgetnet.deploy.predict import read_image
    levels = gradient_16bit()
    if mode == "I;16B":  # big-endian 16-bit, as TIFF keeps it
        image = Image.frombytes("I;16B", (32, 32), levels.astype(">u2").tobytes())
    else:
        image = Image.fromarray(levels.astype(np.int32) if mode == "I" else levels)
    path = tmp_path / ("grey16.png" if mode == "I;16" else "grey.tif")  # PNG cannot hold mode I or I;16B
    image.save(path)
    assert Image.open(path).mode == mode
    pixels, _ = read_image(path, 32)
    expected = np.round(levels / 257).astype(np.uint8)
    assert np.array_equal(pixels, np.broadcast_to(expected, (3, 32, 32)))


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "CMYK", "L", "1"])
def test_every_mode_pil_opens_reads_as_pils_rgb(tmp_path, mode):
    from budgetnet.deploy.predict import read_image
    rgb = Image.fromarray(synthetic_arrays(1, seed=5)[0][0].transpose(1, 2, 0))
    image = rgb.convert(mode)
    image.save(tmp_path / "image.png" if mode != "CMYK" else tmp_path / "image.tif")
    pixels, _ = read_image(tmp_path / ("image.png" if mode != "CMYK" else "image.tif"), 32)
    assert np.array_equal(pixels, np.asarray(image.convert("RGB")).transpose(2, 0, 1))
    if mode in ("RGBA", "CMYK"):  # lossless round trips of the colours
        assert np.array_equal(pixels, np.asarray(rgb).transpose(2, 0, 1))


def test_predict_classifies_a_16_bit_png_as_its_8_bit_copy(tmp_path, capsys, trained_run):
    levels = gradient_16bit()
    Image.fromarray(levels).save(tmp_path / "grey16.png")
    Image.fromarray(np.round(levels / 257).astype(np.uint8)).save(tmp_path / "grey8.png")
    assert main(["predict", str(trained_run), str(tmp_path / "grey16.png"), str(tmp_path / "grey8.png"),
                 "--json", "--top-k", "10"]) == 0
    sixteen, eight = json.loads(capsys.readouterr().out)
    assert sixteen["top_k"] == eight["top_k"]
    white = softmax_of(trained_run, tmp_path / "grey16.png")  # what PIL's clipping conversion makes of it
    assert [t["probability"] for t in sixteen["top_k"]] != pytest.approx(white.sort(descending=True).values.tolist(),
                                                                         abs=1e-3)


def write_16_bit_png(path, levels: np.ndarray, color_type: int) -> None:
    """A PNG of 16 bits per sample written by hand (PIL writes none with colour): colour type 2 is RGB, 4 grey with
    alpha, 6 RGBA; levels uint16 [H, W, samples]."""
    import struct
    import zlib
    h, w = levels.shape[:2]
    rows = b"".join(b"\x00" + levels[r].astype(">u2").tobytes() for r in range(h))  # filter type 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("color_type, samples", [(2, 3), (4, 2), (6, 4)])
def test_48_and_64_bit_pngs_read_as_their_8_bit_colours(tmp_path, color_type, samples):
    from budgetnet.deploy.predict import read_image
    levels = np.round(np.linspace(0, 65535, 32 * 32 * samples)).astype(np.uint16).reshape(32, 32, samples)
    write_16_bit_png(tmp_path / "deep.png", levels, color_type)
    pixels, _ = read_image(tmp_path / "deep.png", 32)
    colour = levels[..., :3] if samples >= 3 else np.repeat(levels[..., :1], 3, axis=2)  # alpha dropped
    assert np.abs(pixels.astype(int) - np.round(colour / 257).transpose(2, 0, 1)).max() <= 1  # PIL keeps the high byte


def softmax_of_arrays(run, images_nhwc: np.ndarray) -> torch.Tensor:
    """The class probabilities of uint8 images [N, 32, 32, 3], computed without budgetnet's predict or export code."""
    x = torch.tensor(images_nhwc, dtype=torch.float32).permute(0, 3, 1, 2) / 255
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    model, _, _ = load_model(run)
    with torch.no_grad():
        return model(x).softmax(1)


def read_csv(path) -> list[dict]:
    import csv
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_a_folder_an_npy_and_a_pickled_batch_go_to_one_csv_with_the_bad_items_listed(tmp_path, capsys, trained_run):
    import pickle
    x, _ = synthetic_arrays(11, seed=21)
    nhwc = x.transpose(0, 2, 3, 1)
    folder = tmp_path / "test-set"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(nhwc[0]).save(folder / "a.png")
    Image.fromarray(nhwc[1]).save(folder / "sub" / "b.png")  # found recursively
    (folder / "sub" / "broken.jpg").write_bytes(b"\xff\xd8 truncated jpeg")
    (folder / "notes.txt").write_text("not an image: skipped")
    np.save(tmp_path / "images.npy", nhwc[2:7])
    with open(tmp_path / "test_batch", "wb") as f:  # as course competitions hand them out: no labels
        pickle.dump({"data": x[7:11].reshape(4, 3072), "filenames": ["w", "x", "y", "z"]}, f, protocol=2)
    np.save(tmp_path / "nchw.npy", x[:2])  # the wrong layout: listed, not classified
    out = tmp_path / "predictions.csv"
    inputs = [str(folder), str(tmp_path / "images.npy"), str(tmp_path / "test_batch"), str(tmp_path / "nchw.npy")]
    rc = main(["predict", str(trained_run), *inputs, "--csv", str(out), "--top-k", "3", "--batch-size", "3",
               "--device", "cpu"])
    captured = capsys.readouterr()
    assert rc == 2
    errors = [line for line in captured.err.splitlines() if not line.startswith("note:")]
    assert errors[0].startswith(f"{folder / 'sub' / 'broken.jpg'}: not a readable image")
    assert errors[1].startswith(f"{tmp_path / 'nchw.npy'}: an .npy must hold uint8 images [N, 32, 32, 3], got "
                                "uint8 [2, 3, 32, 32] (NCHW?")
    assert errors[2] == "budgetnet predict: error: 2 unreadable files (see above); the others were classified"
    assert "skipped 1 files that are not images" in captured.err
    assert captured.out == f"wrote 11 predictions to {out}\n"
    rows = read_csv(out)
    assert list(rows[0]) == ["file", "index", "label", "probability", "label_2", "probability_2", "label_3",
                             "probability_3"]
    assert [(r["file"], r["index"]) for r in rows] == (
        [(str(folder / "a.png"), ""), (str(folder / "sub" / "b.png"), "")]
        + [(str(tmp_path / "images.npy"), str(i)) for i in range(5)]
        + [(str(tmp_path / "test_batch"), str(i)) for i in range(4)])
    expected = softmax_of_arrays(trained_run, nhwc)
    assert expected.max(1).values.min() > 0.3  # the model tells the classes apart, so the check has teeth
    for row, probs in zip(rows, expected):
        top = probs.topk(3)
        assert [row["label"], row["label_2"], row["label_3"]] == [CLASSES[i] for i in top.indices]
        assert [float(row[k]) for k in ("probability", "probability_2", "probability_3")] == pytest.approx(
            top.values.tolist(), abs=2e-6)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []


def test_array_items_print_with_their_index_and_json_names_it(tmp_path, capsys, trained_run):
    x, _ = synthetic_arrays(2, seed=4)
    np.save(tmp_path / "two.npy", x.transpose(0, 2, 3, 1))
    assert main(["predict", str(trained_run), str(tmp_path / "two.npy"), "--top-k", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == [f"{tmp_path / 'two.npy'}[0]", f"{tmp_path / 'two.npy'}[1]"]
    assert main(["predict", str(trained_run), str(tmp_path / "two.npy"), "--json"]) == 0
    assert [(p["file"], p["index"]) for p in json.loads(capsys.readouterr().out)] == [(str(tmp_path / "two.npy"), 0),
                                                                                        (str(tmp_path / "two.npy"), 1)]


def test_batches_stay_within_the_batch_size_and_an_npy_is_memory_mapped(tmp_path, monkeypatch, trained_run):
    from budgetnet.deploy import predict
    x, _ = synthetic_arrays(10, seed=6)
    np.save(tmp_path / "ten.npy", x.transpose(0, 2, 3, 1))
    Image.fromarray(x[0].transpose(1, 2, 0)).save(tmp_path / "one.png")
    sizes, loads = [], []
    classify = predict.Predictor.classify
    monkeypatch.setattr(predict.Predictor, "classify",
                        lambda self, im, src: sizes.append(len(im)) or classify(self, im, src))
    load = np.load
    monkeypatch.setattr(np, "load", lambda *a, **k: loads.append(k.get("mmap_mode")) or load(*a, **k))
    predictor = predict.Predictor(trained_run, device="cpu")
    rows = list(predictor.predict([str(tmp_path / "one.png"), str(tmp_path / "ten.npy")], batch_size=4))
    assert len(rows) == 11 and sizes == [4, 4, 3]  # the image file and the array share batches
    assert loads and set(loads) == {"r"}


def test_a_pickle_that_would_run_code_is_refused_and_a_failed_csv_leaves_the_old_file(tmp_path, capsys, trained_run):
    import os
    import pickle
    with open(tmp_path / "evil_batch", "wb") as f:
        pickle.dump({"data": os.getcwd}, f, protocol=2)  # unpickling would look up a function
    out = tmp_path / "predictions.csv"
    out.write_text("earlier results\n")
    assert main(["predict", str(trained_run), str(tmp_path / "evil_batch"), "--csv", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"budgetnet predict: error: {tmp_path / 'evil_batch'} is truncated or corrupt "
                          "(UnpicklingError: refusing to load posix.getcwd")
    assert out.read_text() == "earlier results\n" and sorted(p.name for p in tmp_path.iterdir()) == [
        "evil_batch", "predictions.csv"]


@pytest.mark.parametrize("args, message", [
    (["--csv", "no-such-folder/p.csv"], "--csv no-such-folder/p.csv: no folder no-such-folder; create it first"),
    (["--batch-size", "0"], "--batch-size 0: give at least 1"),
])
def test_bad_options_are_one_line(tmp_path, capsys, monkeypatch, trained_run, args, message):
    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "black.png")
    assert main(["predict", str(trained_run), "black.png", *args]) == 2
    assert capsys.readouterr().err == f"budgetnet predict: error: {message}\n"
