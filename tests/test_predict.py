"""predict: any size and mode of PNG/JPEG, top-k probabilities equal to the model's softmax, class names from the
checkpoint (no data set), JSON output, unreadable and oversized files named."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from budgetnet.checkpoint import load_model
from budgetnet.cli import main
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
