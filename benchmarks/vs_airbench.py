"""budgetnet recipes beside KellerJordan's airbench (0.1.8, its own code) on the same device and data, in one process.

    python benchmarks/vs_airbench.py [--device cuda|cpu] [--pairs airbench94:small,...] [--seeds 3] [--json]
    python benchmarks/vs_airbench.py --device cpu [--airbench95]   # CPU: airbench94 beside small and cpu
    python benchmarks/vs_airbench.py --device cpu --pairs airbench94_muon:small   # its own script, see below
    python benchmarks/vs_airbench.py --smoke      # CPU: a few steps of both sides (CI)

One clock for both sides: wall time (CUDA-synchronised on a GPU) from the start of training to the final TTA test
accuracy, with the data already on the device. airbench: train9x(verbose=False), whitening included, then its
evaluate at its TTA level 2 (6 views); budgetnet: `train_without_rundir`, evaluating only after the last epoch.
Neither side writes a checkpoint, a log or a summary. Beside that clock, budgetnet's own train_seconds (its
epochs alone). The first run of each system in the process is the cold run (cuDNN autotuning, compilation, first
allocations) and is reported apart; it uses seed N, the warm runs seeds 0..N-1, so no warm run repeats it.
FLOPs of a run: torch.utils.flop_counter on each network (forward+backward per training image times the images
seen, every view counted; forward per test image times the TTA views, with tta_fraction one plain pass per image
plus the views of those retested); airbench's whitening set-up is left out.

airbench reads `cifar10/train.pt` and `cifar10/test.pt` under the working directory; they are written from
budgetnet's loader, so both sides see the same images. On the CPU airbench's code runs unedited, with these
changes made at run time by this script (`airbench_on_cpu`): its loaders load to the CPU and hold fp32 images
(its `gpu=0` default and `.half()`), its network is built with `.cuda()` and `.half()` as no-ops and runs its
forward pass under bf16 autocast with fp32 weights, returning fp32 logits (--airbench-precision fp32: no
autocast), and its CUDA events are a wall clock. bf16, not fp16: CPUs have no fast fp16 convolutions, while
bf16 autocast is what budgetnet's CPU-side recipes (`small`, `cpu`: precision bf16) train in, so both sides run
the same arithmetic; fp32 weights because bf16 weights would drop small SGD updates. How far this moves airbench's
accuracy from its GPU figure (90.68% for airbench94 on the copy) is measured by running it, not assumed.

airbench94_muon is not in the package: it is cifar10-airbench's script `airbench94_muon.py`, read from
--airbench94-muon (default ../shared/ref/airbench94_muon.py beside the repository; without it its pairs are skipped
with a line saying where to put it). It runs as its own `main(run, model)` runs, on a model built as its __main__
builds it (channels_last; compiled with max-autotune on a GPU), with these changes made at run time on the CPU
(`airbench94_muon_on_cpu`): its data loads to the CPU with fp32 images instead of `map_location=cuda` and `.half()`,
the network keeps fp32 weights under bf16 autocast (as above), its Newton-Schulz function and network run eagerly
instead of under torch.compile, and its CUDA events are a wall clock. Its seconds are its own clock (whitening,
training epochs and the final TTA evaluation); its per-epoch test evaluations run but stay out of that clock and of
its FLOPs, as its timer leaves them out. Its log lines go to stderr. With --smoke its training loader holds one
batch of 64 images, so its 8 epochs are 8 steps.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Callable, Iterator

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from budgetnet.config import DataConfig, Recipe, load_recipe
from budgetnet.data.augment import build_augment
from budgetnet.data.cifar import Data, from_arrays, load_data, run_steps, steps_per_epoch
from budgetnet.design.model import flops_per_image
from budgetnet.training.loop import train_without_rundir
from budgetnet.training.provenance import device_name
from budgetnet.training.rundir import MetricRow
from budgetnet.training.runtime import configure_backend
from budgetnet.training.scoring import TTA_VIEWS, forward_passes  # airbench's TTA levels 0, 1, 2: the same views

from tables import markdown

AIRBENCH = ("airbench94", "airbench95", "airbench96", "airbench94_muon")
MUON = "airbench94_muon"  # a script, not part of the airbench package: see the module's doc
MUON_FILE = Path(__file__).resolve().parents[2] / "shared" / "ref" / "airbench94_muon.py"
DEFAULT_PAIRS = {"cuda": (("airbench94", "small"), ("airbench95", "fast"), (MUON, "small"), (MUON, "small-muon"),
                          (MUON, "small-lean")),
                 "cpu": (("airbench94", "small"), ("airbench94", "cpu"))}
SMOKE_PAIRS = (*DEFAULT_PAIRS["cpu"], (MUON, "small"))
SMOKE = ["epochs=1", "batch_size=32", "eval_batch_size=64", "compile=false", "model.channels=[8, 16, 16]"]
SMOKE_AIRBENCH = {"batch_size": 64, "steps": 2}
def clock(device: torch.device) -> float:
    """Seconds of a wall clock after the device has finished its queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def write_airbench_data(data: Data, folder: Path) -> Path:
    """airbench's data files (train.pt, test.pt: uint8 NHWC images, int64 labels, class names) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, (images, labels) in (("train", data.train), ("test", data.test)):
        torch.save({"images": images.permute(0, 2, 3, 1).contiguous().cpu(), "labels": labels.cpu(),
                    "classes": list(data.classes)}, folder / f"{name}.pt")
    return folder


def check_airbench_data(data: Data, folder: Path) -> int:
    """Read the files back with airbench's own loader on the CPU; they must hold our images and labels.
    Returns the number of training images checked."""
    from airbench import CifarLoader

    loader = CifarLoader(str(folder), train=True, batch_size=len(data.train[0]), aug={}, shuffle=False, gpu="cpu")
    images, labels = next(iter(loader))
    ours = data.normalize(data.train[0].float().cpu() / 255)
    if not (torch.equal(labels, data.train[1].cpu()) and torch.allclose(images.float(), ours, atol=0.02)):
        raise RuntimeError(f"airbench's loader reads different images or labels from {folder}")
    return len(labels)


def run_budgetnet(recipe: Recipe, data: Data, device: torch.device, seed: int, eval_every: int | None = None,
                  on_epoch: Callable[[MetricRow], None] | None = None) -> dict:
    """One training run of a recipe with no run directory: accuracy (TTA, after the last epoch), seconds on the one
    clock, the loop's own train_seconds (evaluation excluded), FLOPs. It evaluates after the last epoch only, or
    every `eval_every`."""
    recipe = load_recipe(recipe.to_dict(), [f"seed={seed}", f"eval_every={eval_every or recipe.last_epoch}"])
    start = clock(device)
    summary = train_without_rundir(recipe, data=data, on_epoch=on_epoch)
    seconds = clock(device) - start
    scored = [len(split[0]) for split in (data.val, data.test) if split is not None]
    return {"accuracy": summary.final_test_acc, "seconds": seconds, "train_seconds": summary.train_seconds,
            "params": summary.params, "precision": recipe.precision,
            "pflop": run_pflop(recipe, len(data.train[0]), scored)}


def run_pflop(recipe: Recipe, train_images: int, scored: list[int]) -> float:
    """PFLOP of one run of a recipe on `train_images` training images: forward+backward of every image its steps
    see (each augmented view), and forward of every pass each evaluation makes over splits of `scored` images."""
    flops = flops_per_image(recipe.model)
    seen = run_steps(recipe.epochs, steps_per_epoch(train_images, recipe.batch_size)) * recipe.batch_size
    views = build_augment(recipe.augment, recipe.model.num_classes).num_views
    passes = sum(forward_passes(n, recipe.tta, recipe.tta_fraction) for n in scored)
    evaluations = len({*range(recipe.eval_every, recipe.last_epoch + 1, recipe.eval_every), recipe.last_epoch})
    return (flops["forward_backward"] * seen * views + flops["forward"] * passes * evaluations) / 1e15


class WallEvent:
    """torch.cuda.Event's record/elapsed_time on a wall clock (airbench times itself with CUDA events)."""

    def __init__(self, enable_timing: bool = True) -> None:
        self.t = 0.0

    def record(self) -> None:
        self.t = time.perf_counter()

    def elapsed_time(self, end: "WallEvent") -> float:
        return 1e3 * (end.t - self.t)


@contextlib.contextmanager
def airbench_on_cpu() -> Iterator[None]:
    """Within the block airbench's code runs on the CPU: its loaders load there with fp32 images and its CUDA
    events and synchronize are a wall clock. Everything is restored after."""
    import airbench.utils

    class CpuLoader(airbench.utils.CifarLoader):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **{**kwargs, "gpu": "cpu"})
            self.images = self.images.float()

    saved = (airbench.utils.CifarLoader, torch.cuda.Event, torch.cuda.synchronize)
    airbench.utils.CifarLoader, torch.cuda.Event, torch.cuda.synchronize = CpuLoader, WallEvent, lambda *a: None
    try:
        yield
    finally:
        airbench.utils.CifarLoader, torch.cuda.Event, torch.cuda.synchronize = saved


def cpu_net(make_net: Callable[[], nn.Module], precision: str) -> nn.Module:
    """airbench's network built by its own `make_net` with `.cuda()` and `.half()` as no-ops (fp32 weights on the
    CPU), its forward pass under bf16 autocast returning fp32 logits (precision bf16), or in fp32."""
    saved = nn.Module.cuda, nn.Module.half
    nn.Module.cuda = nn.Module.half = lambda self, *args, **kwargs: self
    try:
        net = make_net()
    finally:
        nn.Module.cuda, nn.Module.half = saved
    if precision == "bf16":
        forward = net.forward

        def autocast_forward(*args, **kwargs) -> torch.Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return forward(*args, **kwargs).float()

        net.forward = autocast_forward
    return net


def airbench_flops(make_net: Callable[[], nn.Module]) -> dict[str, int]:
    """FLOPs of one image through airbench's network (fp32 on the CPU): {"forward", "forward_backward"}, the
    backward pass with the whitening filters frozen, as in its training."""
    net = cpu_net(make_net, "fp32")
    x = torch.zeros(2, 3, 32, 32)
    with FlopCounterMode(display=False) as forward, torch.no_grad():
        net(x)
    with FlopCounterMode(display=False) as both:
        net(x).sum().backward()
    return {"forward": forward.get_total_flops() // 2, "forward_backward": both.get_total_flops() // 2}


def run_airbench(name: str, folder: Path, device: torch.device, seed: int, precision: str = "bf16",
                 smoke: bool = False) -> dict:
    """One airbench run (its default hyperparameters; a few steps with smoke) on the files in `folder`, named
    .../cifar10, on the GPU as it ships or on the CPU through `airbench_on_cpu`."""
    import airbench

    module = getattr(airbench, f"lib_{name}")
    hyp = module.hyp
    make_net = getattr(module, f"make_net{name[-2:]}")
    batch = SMOKE_AIRBENCH["batch_size"] if smoke else hyp["opt"]["batch_size"]
    on_cpu = device.type == "cpu"
    torch.manual_seed(seed)
    cwd = os.getcwd()
    os.chdir(folder.parent)  # airbench opens its test set as cifar10/test.pt
    try:
        with airbench_on_cpu() if on_cpu else contextlib.nullcontext():
            loader = airbench.utils.CifarLoader(folder.name, train=True, batch_size=batch, aug=hyp["aug"],
                                                altflip=True)
            test_loader = airbench.utils.CifarLoader(folder.name, train=False, batch_size=2000)
            net = (lambda: cpu_net(make_net, precision)) if on_cpu else make_net
            epochs = SMOKE_AIRBENCH["steps"] / len(loader) if smoke else hyp["opt"]["train_epochs"]
            start = clock(device)
            model = getattr(airbench, f"train{name[-2:]}")(loader, epochs=epochs, make_net=net, verbose=False)
            accuracy = airbench.evaluate(model, test_loader, tta_level=hyp["net"]["tta_level"])
            seconds = clock(device) - start
    finally:
        os.chdir(cwd)
    # trainable parameters: BatchNorm scales and the whitening filters never train; the whitening bias trains
    # for the first epochs and is frozen (requires_grad False) by the end
    params = sum(p.numel() for key, p in model.named_parameters() if p.requires_grad or key == "0.bias")
    flops = airbench_flops(make_net)
    seen = math.ceil(len(loader) * epochs) * batch
    views = [1, 2, 6][hyp["net"]["tta_level"]]
    total = flops["forward_backward"] * seen + flops["forward"] * len(test_loader.labels) * views
    return {"accuracy": accuracy, "seconds": seconds, "train_seconds": None, "params": params,
            "precision": (precision if on_cpu else "fp16") + " (airbench at run time)" * on_cpu,
            "pflop": total / 1e15}


def missing_muon_file(path: Path) -> str:
    """The one line that says where airbench94_muon.py goes when `path` does not hold it."""
    return (f"{MUON}: skipped, no {path}: put cifar10-airbench's airbench94_muon.py there (unedited) or pass "
            "--airbench94-muon PATH")


def available_pairs(pairs: list[tuple[str, str]], muon_file: Path) -> list[tuple[str, str]]:
    """`pairs` less airbench94_muon's when its file is missing (said on stderr in one line)."""
    if any(a == MUON for a, _ in pairs) and not muon_file.is_file():
        print(missing_muon_file(muon_file), file=sys.stderr, flush=True)
        return [pair for pair in pairs if pair[0] != MUON]
    return pairs


@functools.lru_cache(maxsize=None)
def load_airbench94_muon(path: Path, eager: bool) -> ModuleType:
    """airbench94_muon.py as a module of its own (its __main__ block does not run). With `eager` its
    `@torch.compile` Newton-Schulz function is left uncompiled. It reads its own source as a script does
    (sys.argv[0]) and sets cudnn.benchmark on import: both are as they were afterwards."""
    spec = importlib.util.spec_from_file_location(MUON, path)
    module = importlib.util.module_from_spec(spec)
    saved = torch.compile, sys.argv, torch.backends.cudnn.benchmark
    if eager:
        torch.compile = lambda fn=None, *args, **kwargs: fn if fn is not None else (lambda f: f)
    sys.argv = [str(path)]
    try:
        spec.loader.exec_module(module)
    finally:
        torch.compile, sys.argv, torch.backends.cudnn.benchmark = saved
    return module


@contextlib.contextmanager
def airbench94_muon_on_cpu(module: ModuleType, smoke_batch: int | None = None) -> Iterator[None]:
    """Within the block the script's loaders load to the CPU and hold fp32 images, and CUDA events and synchronize
    are a wall clock; with `smoke_batch` its training loader holds one batch of that many images. Everything is
    restored after."""

    class CpuLoader(module.CifarLoader):
        def __init__(self, path: str, train: bool = True, batch_size: int = 500, aug: dict | None = None) -> None:
            load = torch.load
            torch.load = lambda *args, **kwargs: load(*args, **{**kwargs, "map_location": "cpu"})
            try:
                super().__init__(path, train, smoke_batch if smoke_batch and train else batch_size, aug)
            finally:
                torch.load = load
            self.images = self.images.float()
            if smoke_batch and train:
                self.images, self.labels = self.images[:smoke_batch], self.labels[:smoke_batch]

    saved = (module.CifarLoader, torch.cuda.Event, torch.cuda.synchronize)
    module.CifarLoader, torch.cuda.Event, torch.cuda.synchronize = CpuLoader, WallEvent, lambda *a: None
    try:
        yield
    finally:
        module.CifarLoader, torch.cuda.Event, torch.cuda.synchronize = saved


@functools.lru_cache(maxsize=None)
def airbench94_muon_model(path: Path, device_type: str, precision: str) -> nn.Module:
    """The script's network as its __main__ builds it: on the GPU `CifarNet().cuda()`, channels_last, compiled
    with max-autotune, one model for every run in the process (each `main` resets it); on the CPU through
    `cpu_net` (fp32 weights, bf16 autocast or fp32), eager."""
    module = load_airbench94_muon(path, eager=device_type == "cpu")
    if device_type == "cpu":
        return cpu_net(module.CifarNet, precision).to(memory_format=torch.channels_last)
    model = module.CifarNet().cuda().to(memory_format=torch.channels_last)
    model.compile(mode="max-autotune")
    return model


def run_airbench94_muon(path: Path, folder: Path, device: torch.device, seed: int, precision: str = "bf16",
                        smoke: bool = False) -> dict:
    """One run of airbench94_muon.py's `main` on the files in `folder` (named .../cifar10): accuracy (its 6-view
    TTA), seconds by its own clock (per-epoch evaluations out), FLOPs of the images it trained on plus the TTA."""
    on_cpu = device.type == "cpu"
    module = load_airbench94_muon(path, eager=on_cpu)
    model = airbench94_muon_model(path, device.type, precision)
    trained, logged = [0], {}

    def count(net: nn.Module, args: tuple) -> None:
        if net.training:
            trained[0] += len(args[0])

    def log(variables: dict, is_final_entry: bool) -> None:  # its own logger, noting its clock's last reading
        logged["time_seconds"] = variables["time_seconds"]
        printer(variables, is_final_entry)

    printer = module.print_training_details
    hook = model.register_forward_pre_hook(count)
    module.print_training_details = log
    torch.manual_seed(seed)
    cwd = os.getcwd()
    os.chdir(folder.parent)  # it opens cifar10/train.pt and cifar10/test.pt
    try:
        with (airbench94_muon_on_cpu(module, SMOKE_AIRBENCH["batch_size"] if smoke else None) if on_cpu
              else contextlib.nullcontext()), contextlib.redirect_stdout(sys.stderr):
            accuracy = module.main(seed, model)
    finally:
        os.chdir(cwd)
        module.print_training_details = printer
        hook.remove()
    flops = airbench_flops(module.CifarNet)
    test_images = len(torch.load(folder / "test.pt")["labels"])
    total = flops["forward_backward"] * trained[0] + flops["forward"] * test_images * TTA_VIEWS["flip_translate"]
    return {"accuracy": accuracy, "seconds": logged["time_seconds"], "train_seconds": None,
            "params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "precision": (precision if on_cpu else "fp16") + " (airbench at run time)" * on_cpu,
            "pflop": total / 1e15}


def compare(pairs: list[tuple[str, str]], data: Data, device: torch.device, seeds: int, folder: Path,
            *, on_run: Callable[[dict], None], smoke: bool = False, airbench_precision: str = "bf16",
            cold_seed: int | None = None, muon_file: Path = MUON_FILE) -> None:
    """Run every system of `pairs` cold once (seed `cold_seed`, by default `seeds`: one no warm run uses), then
    warm with seeds 0..seeds-1; each finished run goes to `on_run`. With smoke both sides train tiny for a few
    steps, and airbench's data files are checked. airbench94_muon runs from `muon_file` (see available_pairs)."""
    write_airbench_data(data, folder)
    if smoke:
        on_run({"system": "data files", "run": "smoke", "checked_images": check_airbench_data(data, folder)})
    for system in dict.fromkeys(name for pair in pairs for name in pair):
        for i, seed in enumerate([seeds if cold_seed is None else cold_seed, *range(seeds)]):
            if system == MUON:
                result = run_airbench94_muon(muon_file, folder, device, seed, airbench_precision, smoke)
            elif system in AIRBENCH:
                result = run_airbench(system, folder, device, seed, airbench_precision, smoke)
            else:
                recipe = load_recipe(system, [f"device={device}", *(SMOKE if smoke else [])])
                result = run_budgetnet(recipe, data, device, seed)
            on_run({"system": system, "run": "cold" if i == 0 else "warm", "seed": seed, **result})


def pair_rows(runs: list[dict], pairs: list[tuple[str, str]]) -> list[dict]:
    """One row per system (warm runs: accuracy mean and spread, seconds, train_seconds, PFLOP a run; the cold run's
    seconds), with each budgetnet recipe's ratios to its airbench partner; a recipe paired with two airbench
    systems has a second row with the second one's ratios."""
    rows = {}
    for system in dict.fromkeys(r["system"] for r in runs):
        cold_runs = [r for r in runs if r["system"] == system and r["run"] == "cold"]
        # with --seeds 0 the cold run is the only one: its figures stand in, and `seeds` says 0 warm runs
        warm = [r for r in runs if r["system"] == system and r["run"] == "warm"] or cold_runs
        cold = [r["seconds"] for r in cold_runs]
        accs, secs = [r["accuracy"] for r in warm], [r["seconds"] for r in warm]
        rows[system] = {"system": system, "params": next((r["params"] for r in runs
                                                          if r["system"] == system and "params" in r), None),
                        "seeds": sum(r["run"] == "warm" for r in runs if r["system"] == system),
                        "accuracy": statistics.mean(accs) if accs else None,
                        "accuracy_spread": statistics.stdev(accs) if len(accs) > 1 else None,
                        "seconds": statistics.mean(secs) if secs else None,
                        "train_seconds": statistics.mean(t) if (t := [r["train_seconds"] for r in warm
                                                                    if r["train_seconds"] is not None]) else None,
                        "cold_seconds": cold[0] if cold else None,
                        "pflop": warm[0]["pflop"] if warm else None,
                        "precision": warm[0]["precision"] if warm else None}
    table = list(rows.values())
    for reference, ours in pairs:
        a, b = rows.get(reference), rows.get(ours)
        if a and b and a["seconds"] and b["seconds"]:
            if "vs" in b:  # a recipe beside a second airbench: a second row of it with those ratios
                b = dict(b)
                table.append(b)
            b["vs"] = reference
            b["time_ratio"] = b["seconds"] / a["seconds"]
            b["accuracy_gain"] = b["accuracy"] - a["accuracy"]
            b["flop_ratio"] = b["pflop"] / a["pflop"]
            b["target_met"] = b["accuracy"] >= a["accuracy"] and b["seconds"] < a["seconds"]
    return table


COLUMNS = [("system", "system", ""), ("precision", "precision", ""), ("params", "params", ","),
           ("seeds", "seeds", ""), ("test accuracy", "accuracy", ".2%"), ("spread", "accuracy_spread", ".2%"),
           ("seconds (one clock)", "seconds", ".2f"), ("train_seconds", "train_seconds", ".2f"),
           ("cold run s", "cold_seconds", ".2f"), ("PFLOP a run", "pflop", ".4g"), ("vs", "vs", ""),
           ("time ratio", "time_ratio", ".2f"), ("FLOP ratio", "flop_ratio", ".2f"),
           ("accuracy gain", "accuracy_gain", "+.2%"), ("target met", "target_met", "")]


def smoke_data(n_train: int, n_test: int) -> Data:
    """Random CIFAR-shaped images on the CPU: enough to run the code paths a few steps (--smoke)."""
    g = torch.Generator().manual_seed(0)
    fake = lambda n: (torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8),  # noqa: E731
                      torch.randint(0, 10, (n,), generator=g))
    return from_arrays(fake(n_train), None, fake(n_test), [str(i) for i in range(10)])


def parse_pairs(text: str) -> list[tuple[str, str]]:
    pairs = [tuple(item.split(":")) for item in text.split(",")]
    for pair in pairs:
        if len(pair) != 2 or pair[0] not in AIRBENCH:
            raise SystemExit(f"--pairs {text!r}: give AIRBENCH:RECIPE pairs, AIRBENCH one of {', '.join(AIRBENCH)}")
    return pairs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="where both sides run "
                   "(default: %(default)s; cpu runs airbench through run-time changes, see the module's doc)")
    p.add_argument("--pairs", help="airbench:recipe pairs (default: airbench94:small,airbench95:fast on cuda, "
                                   "airbench94:small,airbench94:cpu on cpu)")
    p.add_argument("--airbench95", action="store_true", help="on the CPU also airbench95 beside fast (about an "
                                                             "hour a run each on 2 cores)")
    p.add_argument("--airbench-precision", choices=["bf16", "fp32"], default="bf16",
                   help="airbench's arithmetic on the CPU: bf16 autocast with fp32 weights, or fp32 "
                        "(default: %(default)s)")
    p.add_argument("--seeds", type=int, default=3, help="warm runs of each system; 0: the cold run alone, whose "
                                                        "figures then fill the row (default: %(default)s)")
    p.add_argument("--cold-seed", type=int, help="the cold run's seed (default: the value of --seeds, which no warm "
                                                 "run uses); with --seeds 0, the seed of the one run a system")
    p.add_argument("--airbench94-muon", type=Path, default=MUON_FILE, metavar="PATH",
                   help="cifar10-airbench's airbench94_muon.py, unedited (default: ../shared/ref/airbench94_muon.py "
                        "beside the repository); without it its pairs are skipped")
    p.add_argument("--data", help="folder holding cifar-10-batches-py/ (default: $BUDGETNET_DATA)")
    p.add_argument("--smoke", action="store_true", help="CPU check: a few steps of both sides on random images "
                                                         "(default pairs: the CPU's and airbench94_muon:small)")
    p.add_argument("--json", action="store_true", help="print the rows and runs as JSON instead of the table")
    args = p.parse_args(argv)
    device = torch.device("cpu" if args.smoke else args.device)
    pairs = (parse_pairs(args.pairs) if args.pairs else list(SMOKE_PAIRS if args.smoke else DEFAULT_PAIRS[device.type]))
    if args.airbench95 and ("airbench95", "fast") not in pairs:
        pairs.append(("airbench95", "fast"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here: pass --device cpu (airbench on the CPU) or --smoke")
    pairs = available_pairs(pairs, args.airbench94_muon)
    data = smoke_data(256, 64) if args.smoke else load_data(DataConfig(), args.data, device)
    configure_backend(device)  # the settings budgetnet's train() uses, from the first run of either side
    runs: list[dict] = []

    def on_run(run: dict) -> None:
        """Keep a finished run and say so at once on stderr (a long CPU run that is cut keeps what finished)."""
        runs.append(run)
        print(json.dumps(run), file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        compare(pairs, data, device, 1 if args.smoke else args.seeds, Path(tmp) / "cifar10", on_run=on_run,
                smoke=args.smoke, airbench_precision=args.airbench_precision, cold_seed=args.cold_seed,
                muon_file=args.airbench94_muon)
    rows = pair_rows([r for r in runs if "accuracy" in r], pairs)
    if args.json:
        print(json.dumps({"device_name": device_name(device), "rows": rows, "runs": runs}, indent=1))
    else:
        print(f"{device_name(device)}{' (SMOKE RUN: not a measurement)' if args.smoke else ''}, torch "
              f"{torch.__version__}, {len(data.train[0]):,} training images\n")
        print(markdown(rows, COLUMNS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
