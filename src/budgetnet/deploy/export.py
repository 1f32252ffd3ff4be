"""Export a run's model: ONNX (torch.onnx dynamo exporter), a torch.export program (.pt2), or a standalone
model.py (plain PyTorch, on a copy of budgetnet's own network files) + weights.

Every format takes float RGB images [N, 3, 32, 32] in [0, 1] and normalizes inside, so users cannot forget it, and
carries the class names (ONNX metadata `classes`, the .pt2's extra file classes.json, model.py's CLASSES).
Each export is checked against budgetnet's own logits before it is reported as written.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from importlib import resources
from pathlib import Path

import torch
from torch import Tensor, nn

from .. import __version__, atomic
from ..data.cifar import DATASETS
from ..design.spec import ModelSpec
from ..errors import RunFailed, UsageError
from ..training.checkpoint import load_model

FORMATS = ("onnx", "pt2", "standalone")
TOLERANCE = 1e-4  # max absolute logit difference accepted between budgetnet and an export
# the standalone export's copy of budgetnet's network, paths kept so that the relative imports resolve: design/model.py
# needs design/spec.py (ModelSpec), which needs choices.py and errors.py
NETWORK_PACKAGE = "network"
NETWORK_FILES = ("design/__init__.py", "design/model.py", "design/spec.py", "choices.py", "errors.py")


class ExportError(RunFailed):
    """An export whose logits differ from budgetnet's."""


class Normalized(nn.Module):
    """A model that takes images in [0, 1] and normalizes them with the dataset's mean and std."""

    def __init__(self, net: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.net((x - self.mean) / self.std)


def standalone_source(spec: ModelSpec, mean: tuple[float, ...], std: tuple[float, ...],
                      classes: list[str] | None) -> str:
    """model.py defining `Net`: budgetnet's own ResNet (from the package NETWORK_PACKAGE beside it, which
    `export_run` fills with copies of NETWORK_FILES) built with the trained design, normalizing inside."""
    return f'''"""A budgetnet {__version__} network as plain PyTorch (from `budgetnet export --format standalone`).

{NETWORK_PACKAGE}/ holds budgetnet's own {", ".join(NETWORK_FILES)}, copied unchanged; this file builds the
trained design with them and normalizes inside:

    model = Net(); model.load_state_dict(torch.load("weights.pt", weights_only=True)); model.eval()
    probs = model(images).softmax(1)  # images: float RGB [N, 3, 32, 32] in [0, 1]
    CLASSES[probs.argmax(1)[0]]        # the class names, in logit order (None if the checkpoint had none)
"""
from __future__ import annotations

import torch
from torch import Tensor

from {NETWORK_PACKAGE}.design.model import ResNet
from {NETWORK_PACKAGE}.design.spec import ModelSpec

DESIGN = {spec.to_dict()!r}
MEAN = {tuple(mean)!r}
STD = {tuple(std)!r}
CLASSES = {classes!r}


class Net(ResNet):
    """The trained design; takes float RGB images [N, 3, 32, 32] in [0, 1] and normalizes them inside."""

    def __init__(self) -> None:
        super().__init__(ModelSpec(**DESIGN))
        self.register_buffer("mean", torch.tensor(MEAN).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward((x - self.mean) / self.std)
'''


def write_standalone(out: Path, net: nn.Module, spec: ModelSpec, mean: tuple[float, ...], std: tuple[float, ...],
                     classes: list[str] | None) -> list[Path]:
    """Write model.py, weights.pt (`net`'s state dict) and NETWORK_PACKAGE/ (budgetnet's network files, copied
    unchanged) into `out`; return the three."""
    package = out / NETWORK_PACKAGE
    package.mkdir(exist_ok=True)
    atomic.write_text(package / "__init__.py", f'"""The network code of budgetnet {__version__}, copied unchanged '
                                               'by `budgetnet export --format standalone`."""\n')
    for name in NETWORK_FILES:
        (package / name).parent.mkdir(exist_ok=True)
        atomic.write_text(package / name, (resources.files("budgetnet") / name).read_text())
    source, weights = out / "model.py", out / "weights.pt"
    atomic.write_text(source, standalone_source(spec, mean, std, classes))
    with atomic.replacing(weights) as tmp:
        torch.save(net.state_dict(), tmp)
    return [source, weights, package]


# run in a fresh interpreter where budgetnet cannot be imported: argv = export folder, input file, output file
_STANDALONE_CHECK = """
import sys, torch
sys.modules["budgetnet"] = None
sys.path.insert(0, sys.argv[1])
from model import Net
net = Net()
net.load_state_dict(torch.load(sys.argv[1] + "/weights.pt", weights_only=True))
with torch.no_grad():
    torch.save(net.eval()(torch.load(sys.argv[2])), sys.argv[3])
"""


def standalone_logits(out: Path, x: Tensor) -> Tensor:
    """The logits of the standalone export in `out` for `x`, computed as a user would: in a new Python process
    that imports model.py from the folder and has no budgetnet."""
    with tempfile.TemporaryDirectory() as tmp:
        images, logits = Path(tmp) / "images.pt", Path(tmp) / "logits.pt"
        torch.save(x, images)
        done = subprocess.run([sys.executable, "-c", _STANDALONE_CHECK, str(out), str(images), str(logits)],
                              capture_output=True, text=True)
        if done.returncode:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise ExportError(f"the standalone export in {out} does not run without budgetnet: {last}")
        return torch.load(logits, weights_only=True)


def _check(name: str, expected: Tensor, got: Tensor) -> float:
    diff = (expected - torch.as_tensor(got)).abs().max().item()
    if not diff <= TOLERANCE:  # a NaN difference is a mismatch too
        raise ExportError(f"the {name} export's logits differ from budgetnet's by {diff:.2e} (> {TOLERANCE})")
    return diff


def _output_dir(out: Path) -> Path:
    """Create the export folder, or say in one line why it cannot be used, before any work."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file: give a folder to write the export into (created if missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a path under a file, a read-only parent
        raise UsageError(f"--out {out}: cannot create this folder ({e.strerror}); give a folder you can write") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out} is not writable: give a folder you can write")
    return out


def export_run(run: str | Path, fmt: str, out_dir: str | Path, which: str = "best") -> dict:
    """Write the export of a run into out_dir, check its logits against budgetnet's; return {"files", "max_abs_diff"}."""
    if fmt not in FORMATS:
        raise UsageError(f"format {fmt!r} is unknown: use one of {', '.join(FORMATS)}")
    out = _output_dir(Path(out_dir))
    net, recipe, meta = load_model(run, which, "cpu")
    classes = meta.classes
    stats = DATASETS[recipe.data.dataset]
    model = Normalized(net, stats.mean, stats.std).eval()
    size = recipe.model.image_size
    x = torch.rand(4, recipe.model.in_channels, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(x)
    if not torch.isfinite(expected).all():
        raise ExportError(f"{run}: the checkpoint's own logits are not finite (NaN or infinite weights: a diverged "
                          "run), so no export can match them; export a checkpoint of an epoch that trained")
    batch = {0: torch.export.Dim("batch", min=1)}  # any batch size, not only the example's

    if fmt == "onnx":
        import onnxruntime as ort

        path = out / "model.onnx"
        program = torch.onnx.export(model, (x,), input_names=["images"], output_names=["logits"],
                                    dynamic_shapes=(batch,), dynamo=True, verbose=False)
        if classes:
            program.model.metadata_props["classes"] = json.dumps(classes)
        with atomic.replacing(path) as tmp:
            program.save(str(tmp))
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        diff = _check("ONNX", expected, torch.from_numpy(session.run(None, {"images": x.numpy()})[0]))
        files = [path]
    elif fmt == "pt2":
        path = out / "model.pt2"
        program = torch.export.export(model, (x,), dynamic_shapes=(batch,))
        with atomic.replacing(path) as tmp, open(tmp, "wb") as f:
            torch.export.save(program, f, extra_files={"classes.json": json.dumps(classes)})
        with torch.no_grad():
            diff = _check("torch.export", expected, torch.export.load(path).module()(x))
        files = [path]
    else:
        files = write_standalone(out, net, recipe.model, stats.mean, stats.std, classes)
        diff = _check("standalone", expected, standalone_logits(out, x))
    readme = out / "README.md"
    atomic.write_text(readme, _readme(fmt, files, stats.mean, stats.std, recipe.data.dataset,
                                      recipe.model.num_classes, classes))
    return {"format": fmt, "files": [str(f) for f in files + [readme]], "max_abs_diff": diff}


def _readme(fmt: str, files: list[Path], mean: tuple, std: tuple, dataset: str, num_classes: int,
            classes: list[str] | None) -> str:
    usage = {
        "onnx": 'import json, onnxruntime as ort\nsession = ort.InferenceSession("model.onnx")\n'
                'logits = session.run(None, {"images": images})[0]  # numpy float32 [N, 3, 32, 32] in [0, 1]\n'
                'classes = json.loads(session.get_modelmeta().custom_metadata_map["classes"])',
        "pt2": 'import json, torch\nextra = {"classes.json": ""}\n'
               'model = torch.export.load("model.pt2", extra_files=extra).module()\n'
               'logits = model(images)\nclasses = json.loads(extra["classes.json"])',
        "standalone": 'import torch\nfrom model import CLASSES, Net\nmodel = Net()\n'
                      'model.load_state_dict(torch.load("weights.pt", weights_only=True))\n'
                      'logits = model.eval()(images)  # needs only torch',
    }[fmt]
    if fmt == "standalone":
        usage += (f"\n# {NETWORK_PACKAGE}/ holds budgetnet's own {', '.join(NETWORK_FILES)}, copied unchanged: "
                  "Net is budgetnet's ResNet")
    names = (f"Classes, in logit order: {', '.join(classes)}." if classes else
             "The checkpoint was written before budgetnet 0.2.0 and holds no class names: logit i is class i "
             f"of {dataset}.")
    return textwrap.dedent(f"""\
        # budgetnet export ({fmt})

        Files: {", ".join(f.name + ("/" if f.is_dir() else "") for f in files)}. A {dataset} classifier ({num_classes} classes).

        Input: float32 RGB images [N, 3, 32, 32] with values in [0, 1] (pixel / 255). The model normalizes
        them inside with mean {tuple(mean)} and std {tuple(std)}: do not normalize them again.
        Output: logits [N, {num_classes}]; softmax gives class probabilities.

        """) + names + "\n\n```python\n" + usage + "\n```\n"
