"""Export: ONNX, TorchScript and the standalone model.py give budgetnet's logits; bad formats are refused."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from budgetnet import checkpoint
from budgetnet.checkpoint import load_model
from budgetnet.data import DATASETS
from budgetnet.export import ExportError, export_run
from budgetnet.model import build_model
from conftest import tiny_recipe


def make_run(root: Path, *overrides: str) -> Path:
    """A run directory holding a randomly initialized tiny model (BatchNorm statistics perturbed)."""
    recipe = tiny_recipe(*overrides)
    torch.manual_seed(0)
    model = build_model(recipe.model)
    for name, buf in model.named_buffers():
        if name.endswith("running_mean") or name.endswith("running_var") or name.endswith("stem.weight"):
            buf.copy_(torch.rand_like(buf) + 0.5)
    run = root / "run"
    checkpoint.save({"model": model.state_dict(), "epoch": 1, "recipe": recipe.to_dict()}, run / "checkpoints" / "best.pt")
    return run


def budgetnet_logits(run: Path, x: torch.Tensor) -> torch.Tensor:
    model, recipe, _ = load_model(run)
    stats = DATASETS[recipe.data.dataset]
    with torch.no_grad():
        return model((x - torch.tensor(stats.mean).view(1, 3, 1, 1)) / torch.tensor(stats.std).view(1, 3, 1, 1))


@pytest.mark.parametrize("overrides", [(), ("model.block=bottleneck",),
                                       ("model.stem=whiten", "model.downsample=pool", "model.pool_size=4")])
def test_standalone_runs_without_budgetnet(tmp_path, overrides):
    run = make_run(tmp_path, *overrides)
    out = tmp_path / "export"
    export_run(run, "standalone", out)
    assert "budgetnet" not in "\n".join(l for l in (out / "model.py").read_text().splitlines()
                                        if l.startswith(("import", "from")))
    x = torch.rand(3, 3, 32, 32)
    torch.save(x, tmp_path / "x.pt")
    script = ("import sys; sys.modules['budgetnet'] = None; sys.path.insert(0, sys.argv[1]); import torch, json\n"
              "from model import Net\nm = Net(); m.load_state_dict(torch.load(sys.argv[1] + '/weights.pt', "
              "weights_only=True)); m.eval()\nwith torch.no_grad(): print(json.dumps(m(torch.load(sys.argv[2])).tolist()))")
    done = subprocess.run([sys.executable, "-I", "-c", script, str(out), str(tmp_path / "x.pt")],
                          capture_output=True, text=True, check=True)
    assert torch.allclose(torch.tensor(json.loads(done.stdout)), budgetnet_logits(run, x), atol=1e-5)


def test_onnx_and_torchscript_match(tmp_path):
    pytest.importorskip("onnxruntime")
    run = make_run(tmp_path)
    x = torch.rand(5, 3, 32, 32)  # a batch size the export never saw: the batch axis is dynamic
    import onnxruntime as ort

    export_run(run, "onnx", tmp_path / "onnx")
    session = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
    assert torch.allclose(got, budgetnet_logits(run, x), atol=1e-4)
    export_run(run, "torchscript", tmp_path / "ts")
    assert torch.allclose(torch.jit.load(str(tmp_path / "ts" / "model.pt"))(x), budgetnet_logits(run, x), atol=1e-5)
    assert "mean" in (tmp_path / "ts" / "README.md").read_text()


def test_bad_inputs(tmp_path):
    with pytest.raises(ExportError, match="unknown"):
        export_run(make_run(tmp_path), "tflite", tmp_path / "x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoints"):
        export_run(tmp_path / "empty", "onnx", tmp_path / "x")
