"""Export: ONNX, torch.export and the standalone model.py give budgetnet's logits and carry the class names;
bad formats and output folders are refused in one line."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import budgetnet
from budgetnet.data.cifar import DATASETS
from budgetnet.deploy.export import ExportError, export_run
from budgetnet.design.model import ResNet
from budgetnet.training import checkpoint
from budgetnet.training.checkpoint import load_model
from conftest import tiny_recipe


CLASSES = ["plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def make_run(root: Path, *overrides: str, classes: list[str] | None = CLASSES) -> Path:
    """A run directory holding a randomly initialized tiny model (BatchNorm statistics perturbed); classes=None
    writes a checkpoint as budgetnet 0.1.0 did, without class names."""
    recipe = tiny_recipe(*overrides)
    torch.manual_seed(0)
    model = ResNet(recipe.model)
    for name, buf in model.named_buffers():
        if name.endswith("running_mean") or name.endswith("running_var") or name.endswith("stem.weight"):
            buf.copy_(torch.rand_like(buf) + 0.5)
    run = root / "run"
    names = {"classes": classes, "budgetnet_version": "0.2.0"} if classes else {}
    checkpoint.save({"model": model.state_dict(), "epoch": 1, "recipe": recipe.to_dict(), **names},
                    run / "checkpoints" / "best.pt")
    return run


def budgetnet_logits(run: Path, x: torch.Tensor) -> torch.Tensor:
    model, recipe, _ = load_model(run)
    stats = DATASETS[recipe.data.dataset]
    with torch.no_grad():
        return model((x - torch.tensor(stats.mean).view(1, 3, 1, 1)) / torch.tensor(stats.std).view(1, 3, 1, 1))


@pytest.mark.parametrize("overrides", [(), ("model.block=bottleneck",),
                                       ("model.stem=whiten", "model.downsample=pool", "model.pool_size=4"),
                                       ("model.stem=whiten", "model.whiten_bias_epochs=1", "model.bn_scale=false",
                                        "model.activation=gelu", "model.output_scale=0.5", "model.dirac_init=true")])
def test_standalone_runs_without_budgetnet(tmp_path, overrides):
    run = make_run(tmp_path, *overrides)
    out = tmp_path / "export"
    export_run(run, "standalone", out)
    assert "budgetnet" not in "\n".join(l for l in (out / "model.py").read_text().splitlines()
                                        if l.startswith(("import", "from")))
    # Net is built from budgetnet's own network code, copied unchanged
    for name in ("design/model.py", "design/spec.py", "choices.py", "errors.py"):
        assert (out / "network" / name).read_text() == (Path(budgetnet.__file__).parent / name).read_text()
    x = torch.rand(3, 3, 32, 32)
    torch.save(x, tmp_path / "x.pt")
    script = ("import sys; sys.modules['budgetnet'] = None; sys.path.insert(0, sys.argv[1]); import torch, json\n"
              "from model import CLASSES, Net\nassert CLASSES == %r\nm = Net(); m.load_state_dict(torch.load(sys.argv[1] + '/weights.pt', "
              "weights_only=True)); m.eval()\nwith torch.no_grad(): print(json.dumps(m(torch.load(sys.argv[2])).tolist()))"
              % CLASSES)
    done = subprocess.run([sys.executable, "-I", "-c", script, str(out), str(tmp_path / "x.pt")],
                          capture_output=True, text=True, check=True)
    assert torch.allclose(torch.tensor(json.loads(done.stdout)), budgetnet_logits(run, x), atol=1e-5)


def test_onnx_and_torch_export_match_carry_the_classes_and_warn_of_nothing(tmp_path):
    pytest.importorskip("onnxruntime")
    run = make_run(tmp_path)
    x = torch.rand(5, 3, 32, 32)  # a batch size the export never saw: the batch axis is dynamic
    import onnxruntime as ort

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_run(run, "onnx", tmp_path / "onnx")
        export_run(run, "pt2", tmp_path / "pt2")
    assert not [w for w in caught if issubclass(w.category, (DeprecationWarning, FutureWarning))]
    session = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
    assert torch.allclose(got, budgetnet_logits(run, x), atol=1e-4)
    assert json.loads(session.get_modelmeta().custom_metadata_map["classes"]) == CLASSES
    extra = {"classes.json": ""}
    program = torch.export.load(tmp_path / "pt2" / "model.pt2", extra_files=extra)
    with torch.no_grad():
        assert torch.allclose(program.module()(x), budgetnet_logits(run, x), atol=1e-5)
    assert json.loads(extra["classes.json"]) == CLASSES
    readme = (tmp_path / "pt2" / "README.md").read_text()
    assert "mean" in readme and "logits [N, 10]" in readme and "plane, car, bird" in readme


def test_cifar100_and_a_checkpoint_without_class_names(tmp_path):
    run = make_run(tmp_path, "model.num_classes=100", "data.dataset=cifar100", classes=None)
    export_run(run, "standalone", tmp_path / "out")
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "A cifar100 classifier (100 classes)" in readme and "logits [N, 100]" in readme
    assert "holds no class names" in readme and "CLASSES = None" in (tmp_path / "out" / "model.py").read_text()


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="format 'tflite' is unknown: use one of onnx, pt2, standalone"):
        export_run(make_run(tmp_path), "tflite", tmp_path / "x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoints"):
        export_run(tmp_path / "empty", "onnx", tmp_path / "x")


def test_unusable_output_folders_are_refused_before_any_work(tmp_path, monkeypatch):
    run = make_run(tmp_path)
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match=r"--out .*file is a file: give a folder"):
        export_run(run, "standalone", tmp_path / "file")
    with pytest.raises(ValueError, match=r"--out .*file/sub: cannot create this folder \(Not a directory\)"):
        export_run(run, "standalone", tmp_path / "file" / "sub")
    with monkeypatch.context() as m:  # a read-only folder, as a user other than root meets it
        m.setattr("budgetnet.deploy.export.os.access", lambda path, mode: False)
        with pytest.raises(ValueError, match=r"--out .*readonly is not writable: give a folder you can write"):
            export_run(run, "standalone", tmp_path / "readonly")
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(ValueError, match=r"--out .*locked is not writable"):
            export_run(run, "standalone", locked)
        with pytest.raises(ValueError, match=r"--out .*locked/sub: cannot create this folder \(Permission denied\)"):
            export_run(run, "standalone", locked / "sub")
