"""predict: any size and mode of PNG/JPEG, top-k probabilities, JSON output, unreadable files named."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image

from budgetnet.cli import main
from test_export import make_run


def test_predict_json_and_bad_file(tmp_path, fake_cifar, capsys):
    run = make_run(tmp_path)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (50, 70, 4), np.uint8), "RGBA").save(tmp_path / "big.png")
    Image.fromarray(rng.integers(0, 255, (32, 32), np.uint8), "L").save(tmp_path / "grey.jpg")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    files = [str(tmp_path / n) for n in ("big.png", "broken.png", "grey.jpg")]
    rc = main(["predict", str(run), *files, "--json", "--top-k", "4", "--data", str(fake_cifar)])
    out, err = capsys.readouterr()
    assert rc == 2
    assert "broken.png: not a readable image" in err and "resized from 70x50 to 32x32" in err
    preds = json.loads(out)
    assert [p["file"] for p in preds] == [files[0], files[2]]
    for p in preds:
        probs = [t["probability"] for t in p["top_k"]]
        assert len(probs) == 4 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-5
        assert p["label"] == p["top_k"][0]["label"] and p["probability"] == probs[0]

    assert main(["predict", str(run), files[0], "--data", str(fake_cifar)]) == 0
    assert "big.png: " in capsys.readouterr().out
