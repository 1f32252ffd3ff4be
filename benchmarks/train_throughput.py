"""Training throughput of the study's model (ResNet-18, C_1=42): budgetnet's loop vs a plain PyTorch loop.

    python benchmarks/train_throughput.py [--device cpu|cuda] [--steps 10] [--batch-sizes 512,1024]
                                          [--compile-modes default,reduce-overhead] [--augmix] [--json]
    python benchmarks/train_throughput.py --smoke --augmix      # every row for 2 steps: a check, not a measurement
    python benchmarks/train_throughput.py --optimizers sgd,muon,muon_batched,muon_every_4,muon_cheap
                                          [--optimizer-batch 2000] [--steps 3]

plain: the widely copied kuangliu/pytorch-cifar loop - a torchvision-style Dataset over the same uint8 arrays,
per-image PIL transforms RandomCrop(32, padding=4) + RandomHorizontalFlip + ToTensor + Normalize, a DataLoader
with 2 worker processes, fp32, contiguous tensors, loss.item() and accuracy .item() every step, batch 128.
budgetnet: `budgetnet.training.loop.train` on the same arrays and model (data on the device as uint8, batched
augmentation on the device, channels_last, no per-step host sync): fp32 and bf16 autocast at batch 128, bf16 at
each --batch-sizes, bf16 at batch 128 under each --compile-modes. --augmix adds the study's AugMix+JSD step
beside crop+flip in the device's default precision (cost per source image; each gives three views). --smoke
runs every row for 2 steps on random images with the model at C_1=4 (no larger batches, no compile).

Both sides train with SGD (momentum 0.9, weight decay 5e-4) in the same process, one after the other; each is
timed over --steps steps (budgetnet: epoch 2 of a 2-epoch run of --steps batches, after the warm-up epoch whose
extra seconds, compilation included, are reported as warm-up). Every row has the model's FLOPs per image
(forward+backward, torch.utils.flop_counter; times three views with JSD), the achieved TFLOP/s and, on CUDA,
the peak memory allocated (torch.cuda.max_memory_allocated).

--optimizers measures the optimizer step's cost instead: budgetnet's loop on the `small` recipe (airbench94_muon's
network, bf16, its augmentation; constant learning rate) at one batch size (--optimizer-batch, default 2000,
airbench94_muon's) with each named optimizer in turn (OPTIMIZERS: airbench94's SGD, airbench94_muon's Muon on the
conv filters, and Muon with its cheaper options, which `small` ships), timed as above; each row's images/s is also given
as a fraction of SGD's. --smoke: a tiny network for 2 steps of 32 images on random data (CI).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from budgetnet.config import load_recipe
from budgetnet.data.cifar import DATASETS, from_arrays, load_split
from budgetnet.data.policies import AugMix, Crop, Flip, PolicyConfig
from budgetnet.design.model import ResNet, flops_per_image
from budgetnet.training.loop import train_without_rundir
from budgetnet.training.provenance import device_name
from budgetnet.training.rundir import MetricRow

from tables import markdown

CROP_FLIP = [Crop(padding=4), Flip(p=0.5)]
TINY = ["model.channels=4"]  # --smoke: the study's ResNet-18 at C_1=4, the same code path in a second on the CPU
# airbench94's SGD (small's optimizer before Muon) and airbench94_muon's Muon step with small's cheaper options off
SGD = ["optimizer.name=sgd", "optimizer.units=per_1024", "optimizer.lr=11.5", "optimizer.weight_decay=0.0153",
       "optimizer.norm_lr_scale=64", "optimizer.norm_weight_decay=null", "optimizer.whiten_bias_as_norm=false"]
MUON = ["optimizer.name=muon", "optimizer.muon_batched=false", "optimizer.muon_normalize_every=1"]
OPTIMIZERS = {"sgd": SGD, "muon": MUON, "muon_batched": [*MUON, "optimizer.muon_batched=true"],
              "muon_every_4": [*MUON, "optimizer.muon_normalize_every=4"],
              "muon_cheap": [*MUON, "optimizer.muon_batched=true", "optimizer.muon_normalize_every=4"]}
SMOKE_SMALL = ["model.channels=[8, 16, 16]"]  # --smoke with --optimizers: small at tiny widths
AUGMIX_JSD = [*CROP_FLIP, AugMix(jsd=True)]


class ArrayCIFAR(Dataset):
    """torchvision.datasets.CIFAR10's __getitem__ over in-memory arrays: PIL image, transform, label."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images.transpose(0, 2, 3, 1), labels, transform  # NHWC as PIL wants

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def peak_memory_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def plain_run(images: np.ndarray, labels: np.ndarray, device: torch.device, steps: int, warmup: int,
              *, model_overrides: list[str] = (), batch: int = 128) -> dict:
    """Images/s of the plain loop over `steps` steps after `warmup` steps, and its peak memory."""
    info = DATASETS["cifar10"]
    transform = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                    transforms.ToTensor(), transforms.Normalize(info.mean, info.std)])
    loader = DataLoader(ArrayCIFAR(images, labels, transform), batch_size=batch, shuffle=True, num_workers=2,
                        drop_last=True)
    torch.manual_seed(0)
    model = ResNet(load_recipe("seed", model_overrides).model).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    reset_peak_memory(device)
    train_loss = correct = total = 0
    start = None
    for step, (x, y) in enumerate(loader):
        if step == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        if step == warmup + steps:
            break
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad()
        outputs = model(x)
        loss = F.cross_entropy(outputs, y)
        loss.backward()
        optimizer.step()
        train_loss += loss.item()
        correct += outputs.argmax(1).eq(y).sum().item()
        total += y.size(0)
    return {"images_per_s": steps * batch / (time.perf_counter() - start), "peak_memory_gib": peak_memory_gib(device)}


class CudagraphSkips(logging.Handler):
    """The "skipping cudagraphs due to ..." messages Inductor logs while it is attached (torch's documented
    `cudagraphs` log artifact, switched on for the block)."""

    def __init__(self) -> None:
        super().__init__()
        self.reasons: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "skipping cudagraphs" in record.getMessage():
            self.reasons.append(record.getMessage())


@contextlib.contextmanager
def watch_cudagraphs() -> Iterator[CudagraphSkips]:
    skips, logger = CudagraphSkips(), logging.getLogger("torch._inductor")  # where its log records stop
    torch._logging.set_logs(cudagraphs=True)
    logger.addHandler(skips)
    try:
        yield skips
    finally:
        logger.removeHandler(skips)
        torch._logging.set_logs()


def budgetnet_run(images: np.ndarray, labels: np.ndarray, device: torch.device, steps: int, precision: str,
                  *, batch: int = 128, augment: list[PolicyConfig] | None = CROP_FLIP, compile: bool = False,
                  compile_mode: str = "default", model_overrides: list[str] = (), recipe_name: str = "seed") -> dict:
    """Images/s of budgetnet's loop in epoch 2 of a run of `steps` batches per epoch (epoch 1 is the warm-up),
    the warm-up's extra seconds, the peak memory and, for the modes that add CUDA graphs, whether Inductor logged
    skipping them (cuda_graphs). augment None: the recipe's own."""
    recipe = load_recipe(recipe_name, [*model_overrides, "epochs=2", f"batch_size={batch}", "schedule.name=constant",
                                       f"device={device}", f"precision={precision}", "eval_every=2",
                                       f"compile={compile}", f"compile_mode={compile_mode}"])
    if augment is not None:
        recipe.augment = augment
    n = min(steps * batch, len(images))
    data = from_arrays((images[:n], labels[:n]), None, (images[:batch], labels[:batch]), [str(i) for i in range(10)],
                       device=device)
    rows: list[MetricRow] = []
    reset_peak_memory(device)
    graphs = compile and compile_mode in ("reduce-overhead", "max-autotune")
    with watch_cudagraphs() if graphs else contextlib.nullcontext() as skips:
        train_without_rundir(recipe, data=data, on_epoch=rows.append)
    return {"images_per_s": rows[-1].images_per_s, "warmup_s": rows[0].seconds - rows[1].seconds,
            "peak_memory_gib": peak_memory_gib(device),
            "cuda_graphs": (("skipped: " + "; ".join(dict.fromkeys(skips.reasons))) if skips.reasons
                            else "no skip logged") if graphs else None}


def row(loop: str, precision: str, batch: int, result: dict, flops: int, plain: float | None, *, views: int = 1,
        **extra) -> dict:
    """A table row: images/s (source images), the ratio to the plain loop, FLOPs, TFLOP/s, warm-up, memory."""
    ips = result["images_per_s"]
    return {"loop": loop, "precision": precision, "batch": batch, **extra, "images_per_s": ips,
            "vs_plain": ips / plain if plain else None, "gflop_per_image": flops * views / 1e9,
            "tflops": ips * flops * views / 1e12, "warmup_s": result.get("warmup_s"),
            "peak_memory_gib": result["peak_memory_gib"], "cuda_graphs": result.get("cuda_graphs")}


def measure(images: np.ndarray, labels: np.ndarray, device: torch.device, steps: int, warmup: int,
            *, batch_sizes: list[int], compile_modes: list[str], on_row: Callable[[dict], None],
            model_overrides: list[str] = ()) -> float:
    """Measure the plain loop and budgetnet's variants in turn; each finished row goes to `on_row` (so a caller
    keeps what a time limit cuts). Returns the plain loop's images/s."""
    flops = flops_per_image(load_recipe("seed", model_overrides).model)["forward_backward"]
    result = plain_run(images, labels, device, steps, warmup, model_overrides=model_overrides)
    plain = result["images_per_s"]
    on_row(row("plain (DataLoader, 2 workers)", "fp32", 128, result, flops, plain))
    run = lambda **kw: budgetnet_run(images, labels, device, steps, model_overrides=model_overrides, **kw)  # noqa: E731
    for precision in ("fp32", "bf16"):
        on_row(row("budgetnet", precision, 128, run(precision=precision), flops, plain))
    for batch in batch_sizes:
        on_row(row("budgetnet", "bf16", batch, run(precision="bf16", batch=batch), flops, plain))
    for mode in compile_modes:
        on_row(row(f"budgetnet, compile {mode}", "bf16", 128, run(precision="bf16", compile=True, compile_mode=mode),
                   flops, plain))
    return plain


def augmix_cost(images: np.ndarray, labels: np.ndarray, device: torch.device, steps: int,
                *, on_row: Callable[[dict], None], model_overrides: list[str] = (), plain: float | None = None) -> None:
    """budgetnet's crop+flip step, then the study's crop+flip+AugMix+JSD step, in the recipes' default precision
    (bf16 on CUDA, fp32 on the CPU); the second row carries its cost per source image relative to the first."""
    flops = flops_per_image(load_recipe("seed", model_overrides).model)["forward_backward"]
    default = "bf16" if device.type == "cuda" else "fp32"
    run = lambda **kw: budgetnet_run(images, labels, device, steps, precision="auto",  # noqa: E731
                                     model_overrides=model_overrides, **kw)
    crop_flip = run()
    on_row(row("budgetnet crop+flip", default, 128, crop_flip, flops, plain))
    jsd = run(augment=AUGMIX_JSD)
    on_row(row("budgetnet crop+flip+AugMix+JSD", default, 128, jsd, flops, plain, views=3,
               cost_vs_crop_flip=crop_flip["images_per_s"] / jsd["images_per_s"]))


def optimizer_cost(images: np.ndarray, labels: np.ndarray, device: torch.device, steps: int, *, batch: int,
                   optimizers: list[str], on_row: Callable[[dict], None], model_overrides: list[str] = ()) -> None:
    """budgetnet's loop on `small` (lookahead off) with each of `optimizers` (OPTIMIZERS' names) in turn at batch
    `batch`, in small's precision; each row after SGD's carries its images/s as a fraction of SGD's (vs_sgd)."""
    recipe = load_recipe("small", list(model_overrides))
    flops = flops_per_image(recipe.model)["forward_backward"]
    sgd = None
    for name in optimizers:
        result = budgetnet_run(images, labels, device, steps, recipe.precision, batch=batch, augment=None,
                               model_overrides=[*model_overrides, "lookahead.enabled=false", *OPTIMIZERS[name]],
                               recipe_name="small")
        if name == "sgd":
            sgd = result["images_per_s"]
        on_row(row(f"budgetnet small, {name}", recipe.precision, batch, result, flops, None,
                   vs_sgd=result["images_per_s"] / sgd if sgd else None))


COLUMNS = [("loop", "loop", ""), ("precision", "precision", ""), ("batch", "batch", ""),
           ("images/s", "images_per_s", ",.0f"), ("vs plain", "vs_plain", ".2f"), ("vs SGD", "vs_sgd", ".2f"), ("GFLOP/image", "gflop_per_image", ".3f"),
           ("TFLOP/s", "tflops", ".2f"), ("warm-up s", "warmup_s", ".1f"), ("peak GiB", "peak_memory_gib", ".2f"),
           ("cost per source image vs crop+flip", "cost_vs_crop_flip", ".2f"), ("CUDA graphs", "cuda_graphs", "")]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--steps", type=int, default=None, help="timed steps (default: 10 on CPU, 100 on CUDA)")
    p.add_argument("--warmup", type=int, default=None, help="plain loop warm-up steps (default: 3 on CPU, 20 on CUDA)")
    p.add_argument("--batch-sizes", default="", help="larger batches for budgetnet in bf16, e.g. 512,1024")
    p.add_argument("--compile-modes", default="", help="torch.compile modes to measure at batch 128, e.g. "
                                                       "default,reduce-overhead")
    p.add_argument("--augmix", action="store_true", help="also AugMix+JSD vs crop+flip (cost per source image)")
    p.add_argument("--optimizers", help="instead of the above: the optimizer step's cost on small's network, e.g. "
                                        f"sgd,muon (names: {', '.join(OPTIMIZERS)}; sgd first gives the ratios)")
    p.add_argument("--optimizer-batch", type=int, default=2000, help="batch size of --optimizers (default: "
                                                                     "%(default)s, airbench94_muon's)")
    p.add_argument("--data", help="folder holding cifar-10-batches-py/ (default: $BUDGETNET_DATA)")
    p.add_argument("--smoke", action="store_true",
                   help="every row for 2 steps on random images, model at C_1=4, no larger batches or compile: "
                        "checks the code, measures nothing")
    p.add_argument("--json", action="store_true", help="print the rows as JSON instead of the table")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    steps = 2 if args.smoke else args.steps or (100 if device.type == "cuda" else 10)
    warmup = 1 if args.smoke else args.warmup or (20 if device.type == "cuda" else 3)
    batch_sizes = [] if args.smoke else [int(b) for b in args.batch_sizes.split(",") if b]
    compile_modes = [] if args.smoke else [m for m in args.compile_modes.split(",") if m]
    overrides = TINY if args.smoke else []
    if args.smoke:
        rng = np.random.default_rng(0)
        n = (steps + warmup) * 128
        images, labels = rng.integers(0, 256, (n, 3, 32, 32), np.uint8), rng.integers(0, 10, n)
    else:
        images, labels, _ = load_split("cifar10", "train", args.data)
    rows: list[dict] = []
    if args.optimizers:
        names = args.optimizers.split(",")
        unknown = [n for n in names if n not in OPTIMIZERS]
        if unknown:
            raise SystemExit(f"--optimizers: {', '.join(unknown)} unknown; use names from {', '.join(OPTIMIZERS)}")
        batch, steps = (32, 2) if args.smoke else (args.optimizer_batch, args.steps or 3)
        optimizer_cost(images, labels, device, steps, batch=batch, optimizers=names, on_row=rows.append,
                       model_overrides=SMOKE_SMALL if args.smoke else [])
        print(json.dumps(rows, indent=1) if args.json else
              f"small's network, {steps} timed steps of {batch} on {device_name(device)}"
              f"{' (SMOKE RUN: not a measurement)' if args.smoke else ''}\n\n{markdown(rows, COLUMNS)}")
        return 0
    plain = measure(images, labels, device, steps, warmup, batch_sizes=batch_sizes, compile_modes=compile_modes,
                    on_row=rows.append, model_overrides=overrides)
    if args.augmix:
        augmix_cost(images, labels, device, steps, on_row=rows.append, model_overrides=overrides, plain=plain)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    model = "C_1=4 (SMOKE RUN: not a measurement)" if args.smoke else "C_1=42"
    print(f"ResNet-18 {model} training, {steps} timed steps on {device_name(device)}\n")
    print(markdown(rows, COLUMNS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
