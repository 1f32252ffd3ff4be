"""The ResNet design space (N, B_i, C_i, F_i, K_i, P): validation, closed-form parameter count, fit-to-budget."""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from ..choices import check_choices, check_ranges
from ..errors import UsageError

# the choice fields' values (ModelSpec's docstring says what each means); validate() checks them
BlockType = Literal["basic", "bottleneck", "single"]
Stem = Literal["conv", "whiten"]
WhitenPadding = Literal["same", "valid"]
Downsample = Literal["stride", "pool"]
PoolType = Literal["avg", "max"]
Activation = Literal["relu", "gelu", "silu"]

EXPANSION = {"basic": 1, "bottleneck": 4, "single": 1}
WHITEN_KERNEL = 2  # the whitening stem sees 2x2 patches: 2 * in_channels * 2 * 2 output channels (+/- eigenvectors)
# the range (inclusive) of every integer field, checked first by validate() (a list item by item): wide enough for
# any design a GPU trains, narrow enough that every later check and count is quick
MODEL_RANGES = {
    "model.blocks": (0, 100),
    "model.channels": (1, 2**16),
    "model.kernel_size": (1, 63),
    "model.shortcut_kernel_size": (1, 63),
    "model.pool_size": (1, 4096),
    "model.num_classes": (1, 100_000),
    "model.in_channels": (1, 1024),
    "model.image_size": (1, 4096),
    "model.whiten_bias_epochs": (0, 100_000),
}


class SpecError(UsageError):
    """A design that cannot be built: the message names the field and how to fix it."""


class BudgetError(SpecError):
    """A design with more trainable parameters than the budget allows."""


@dataclass
class ModelSpec:
    """One point of the design space; recipe keys live under `model`.

    blocks: B_i, one entry per residual stage (N = len(blocks)).
    channels: C_1 (then C_i = 2^(i-1) C_1) or the list of C_i.
    kernel_size: F_i, conv kernel size (scalar for every stage, or one per stage); the stem uses F_1.
    shortcut_kernel_size: K_i, kernel of the projection shortcut where a stage changes shape.
    pool_size: P, pool size before the classifier (average pooling unless pool_type says max).
    block: 'basic' (two F_i convs), 'bottleneck' (1x1, F_i, 1x1 x4) or 'single' (one F_i conv + BN; with the
        'pool' downsample, a stage of one 'single' block is airbench's conv group with a residual connection).
    stem: 'conv' (F_1 conv, BN, ReLU to C_1) or 'whiten' (a frozen 2x2 patch-whitening conv initialised from the
        data's patch covariance, then ReLU; no trainable parameters, airbench style).
    whiten_padding: 'same' (the whitening stem keeps the image size) or 'valid' (no padding: a 2x2 stem turns
        32x32 into 31x31, as airbench's does; every later size is floor-halved by the max-pools).
    pool_type: 'avg' or 'max' (airbench) for the pool before the classifier.
    downsample: 'stride' (stage 1 keeps the size, later stages open with a stride-2 block) or 'pool' (every stage
        opens with an F_i conv, 2x2 max-pool, BN, ReLU to C_i, then B_i stride-1 blocks; airbench style).
    bn_scale: BatchNorm has a learnable scale (False: the scale is fixed at 1, not trained and not counted; airbench).
    bn_momentum, bn_eps: every BatchNorm's running-statistics momentum in torch's convention
        (running = (1 - m) running + m batch) and epsilon; airbench94's "momentum 0.6" is m = 1 - 0.6 = 0.4 here,
        with eps 1e-12.
    activation: 'relu', 'gelu' (airbench) or 'silu' (hiverge's speedrun) after the stem and every BN that torch's
        ResNet follows with a ReLU.
    output_scale: the logits are multiplied by this constant (airbench: 1/9).
    dirac_init: each conv's first C_in filters start as the identity (torch.nn.init.dirac_, as airbench's Conv);
        the others keep their random start.
    whiten_bias_epochs: with stem 'whiten', a bias after the frozen filters, trained for this many epochs (a
        fraction stops it part-way through an epoch) and then frozen (airbench94: 3); 0: no bias. It counts in
        the budget (the optimizer updates it).
    residual: False drops the 'single' block's shortcut, so that a 'pool' stage of one 'single' block is
        airbench's conv group exactly (conv, pool, BN, act, conv, BN, act); for block 'single' only.
    fc_init_std: the classifier's weights are rescaled after their random start to this standard deviation
        (airbench94_muon: 1); None keeps torch's default start.
    """

    blocks: list[int] = field(default_factory=lambda: [2, 2, 2, 2])
    channels: int | list[int] = 42
    kernel_size: int | list[int] = 3
    shortcut_kernel_size: int | list[int] = 1
    pool_size: int = 4
    block: BlockType = "basic"
    stem: Stem = "conv"
    whiten_padding: WhitenPadding = "same"
    downsample: Downsample = "stride"
    pool_type: PoolType = "avg"
    num_classes: int = 10
    in_channels: int = 3
    image_size: int = 32
    bn_scale: bool = True
    bn_momentum: float = 0.1
    bn_eps: float = 1e-5
    activation: Activation = "relu"
    output_scale: float = 1.0
    dirac_init: bool = False
    whiten_bias_epochs: int | float = 0
    residual: bool = True
    fc_init_std: float | None = None

    # ---- per-stage views ------------------------------------------------------------------
    @property
    def num_stages(self) -> int:
        return len(self.blocks)

    def _per_stage(self, name: str) -> list[int]:
        value = getattr(self, name)
        if isinstance(value, int):
            return [value] * self.num_stages
        if len(value) != self.num_stages:
            raise SpecError(
                f"model.{name} has {len(value)} values but model.blocks has N={self.num_stages} stages: "
                f"give one value for every stage or a list of {self.num_stages}")
        return list(value)

    def stage_channels(self) -> list[int]:
        """C_i for every stage (doubling from C_1 unless a list is given)."""
        if isinstance(self.channels, int):
            return [self.channels * 2**i for i in range(self.num_stages)]
        return self._per_stage("channels")

    def stage_kernels(self) -> list[int]:
        return self._per_stage("kernel_size")

    def stage_shortcut_kernels(self) -> list[int]:
        return self._per_stage("shortcut_kernel_size")

    def stem_size(self) -> int:
        """Side of the stem's output feature map (a 'valid' whitening stem loses WHITEN_KERNEL - 1 pixels)."""
        valid = self.stem == "whiten" and self.whiten_padding == "valid"
        return self.image_size - (WHITEN_KERNEL - 1) * valid

    def stage_sizes(self) -> list[int]:
        """Output feature-map side of every stage: each halves it (floor, as a 2x2 max-pool does), except the
        first under stride downsampling."""
        sizes, side = [], self.stem_size()
        for i in range(self.num_stages):
            if self.downsample == "pool" or i > 0:
                side //= 2
            sizes.append(side)
        return sizes

    def stem_channels(self) -> int:
        """Channels the stem hands to stage 1."""
        return 2 * self.in_channels * WHITEN_KERNEL**2 if self.stem == "whiten" else self.stage_channels()[0]

    def final_size(self) -> int:
        """Side of the feature map after average pooling (the classifier sees C_N * expansion * side^2)."""
        return self.stage_sizes()[-1] // self.pool_size

    # ---- validation -----------------------------------------------------------------------
    def validate(self) -> "ModelSpec":
        """Raise SpecError naming the first problem; return self when the design can be built."""
        check_choices(self, "model.", SpecError)
        check_ranges(self, MODEL_RANGES, "model.", SpecError)
        if self.whiten_padding == "valid" and (self.stem != "whiten" or self.downsample != "pool"):
            raise SpecError("model.whiten_padding=valid is for model.stem=whiten with model.downsample=pool (the "
                            "max-pools floor the odd sizes it makes): set it to same or use that stem and downsample")
        if not 0 <= self.bn_momentum <= 1 or self.bn_eps <= 0:
            raise SpecError(f"model.bn_momentum={self.bn_momentum} must be in [0, 1] (torch's convention; "
                            f"airbench's 0.6 is 0.4) and model.bn_eps={self.bn_eps} > 0")
        if self.whiten_bias_epochs and self.stem != "whiten":
            raise SpecError(f"model.whiten_bias_epochs={self.whiten_bias_epochs} is for model.stem=whiten only: set "
                            "it to 0 or use the whitening stem")
        if not self.residual and self.block != "single":
            raise SpecError(f"model.residual=false is for model.block=single (airbench's conv group), not "
                            f"{self.block!r}: set it to true or use the single block")
        if self.fc_init_std is not None and not self.fc_init_std > 0:
            raise SpecError(f"model.fc_init_std={self.fc_init_std} must be > 0 (airbench94_muon: 1), or null for "
                            "torch's default start")
        if not self.blocks:
            raise SpecError("model.blocks is empty: give the number of blocks of every stage, e.g. [2, 2, 2, 2]")
        if self.downsample == "stride" and 0 in self.blocks:
            raise SpecError(f"model.blocks={self.blocks}: block counts must be positive (zero, a stage of one "
                            "conv + max-pool, is allowed only with model.downsample=pool)")
        self.stage_channels()  # raises for a list of C_i of another length than model.blocks (the kernels' below)
        for name, values in [("kernel_size", self.stage_kernels()),
                             ("shortcut_kernel_size", self.stage_shortcut_kernels())]:
            for i, k in enumerate(values):
                if k % 2 == 0:
                    raise SpecError(
                        f"model.{name} of stage {i + 1} is {k}, an even size: kernels must be odd so that "
                        f"'same' padding keeps the feature map aligned; use {k - 1} or {k + 1}")
        # The stages halve the stem's output, which under 'same' padding is the input image (stem_size() ==
        # image_size, so the message's "input" is right): it must halve evenly, since a stride-2 conv ceil-halves
        # an odd side where stage_sizes floors it. A 'valid' whitening stem's odd output is floor-halved by
        # max-pools, as stage_sizes does, so it is not checked.
        halvings = self.num_stages - (self.downsample == "stride")
        if self.stem_size() % 2 ** halvings and self.whiten_padding == "same":
            raise SpecError(
                f"N={self.num_stages} stages halve the {self.image_size}x{self.image_size} input "
                f"{halvings} times, which does not divide evenly: use fewer stages")
        side = self.stage_sizes()[-1]
        if side < 1:
            raise SpecError(f"N={self.num_stages} stages halve the {self.stem_size()}x{self.stem_size()} stem "
                            f"output below 1x1: use fewer stages")
        if self.pool_size > side or side % self.pool_size:
            divisors = [d for d in range(1, side + 1) if side % d == 0]
            raise SpecError(
                f"model.pool_size={self.pool_size} does not fit the final {side}x{side} feature map "
                f"(N={self.num_stages} stages on {self.image_size}x{self.image_size} input): "
                f"use one of {divisors}")
        return self

    # ---- parameter count --------------------------------------------------------------------
    def count_params(self) -> int:
        """Parameters the optimizer updates at any point of the run, in closed form: the budget's count (convs
        have no bias; BatchNorm has weight and bias, or only bias without bn_scale; a whitening bias counts)."""
        return sum(row["params"] for row in self.stage_table())

    def count_params_whole_run(self) -> int:
        """Parameters trained for the whole run: count_params less those frozen part-way (the whitening bias)."""
        return self.count_params() - self.whiten_bias_params()

    def whiten_bias_params(self) -> int:
        """Size of the whitening stem's bias (0 without one)."""
        return self.stem_channels() if self.stem == "whiten" and self.whiten_bias_epochs else 0

    def stage_table(self) -> list[dict]:
        """One row per layer group (stem, every stage, classifier) with its shape and parameter count."""
        self.validate()
        exp = EXPANSION[self.block]
        chans, kernels, shortcuts, sizes = (self.stage_channels(), self.stage_kernels(),
                                            self.stage_shortcut_kernels(), self.stage_sizes())
        c_in = self.stem_channels()
        whiten = self.stem == "whiten"
        bn = 2 if self.bn_scale else 1  # BatchNorm parameters per channel

        def conv_bn(c_in: int, c_out: int, k: int) -> int:
            return k * k * c_in * c_out + bn * c_out

        stem_name = (f"stem (whitening, frozen; bias trained {self.whiten_bias_epochs} epochs)"
                     if self.whiten_bias_params() else "stem (whitening, frozen)")
        rows = [{"layer": stem_name if whiten else "stem",
                 "output": f"{c_in}x{self.stem_size()}x{self.stem_size()}", "channels": c_in,
                 "kernel": WHITEN_KERNEL if whiten else kernels[0], "shortcut": "-", "blocks": 1,
                 "params": self.whiten_bias_params() if whiten else conv_bn(self.in_channels, c_in, kernels[0])}]
        for i, (n, c, f, k, s) in enumerate(zip(self.blocks, chans, kernels, shortcuts, sizes)):
            params = 0
            if self.downsample == "pool":  # conv, max-pool, BN: the same count as conv_bn
                params += conv_bn(c_in, c * exp, f)
                c_in = c * exp
            for b in range(n):
                stride = 2 if (i > 0 and b == 0 and self.downsample == "stride") else 1
                params += _block_params(self.block, c_in, c, f, k, stride, conv_bn, self.residual)
                c_in = c * exp
            rows.append({"layer": f"stage {i + 1}", "output": f"{c * exp}x{s}x{s}", "channels": c * exp,
                         "kernel": f, "shortcut": k, "blocks": n, "params": params})
        features = c_in * self.final_size() ** 2
        rows.append({"layer": f"{self.pool_type} pool {self.pool_size} + fc", "output": str(self.num_classes),
                     "channels": features, "kernel": "-", "shortcut": "-", "blocks": "-",
                     "params": features * self.num_classes + self.num_classes})
        return rows

    # ---- FLOP count ------------------------------------------------------------------------
    def count_flops(self) -> dict[str, int]:
        """FLOPs of one image through the design, {"forward", "forward_backward"}, in closed form, as
        torch.utils.flop_counter counts them on the built module (design.model.flops_per_image, which this must
        equal): 2 per multiply-add of every convolution and of the classifier, nothing for BatchNorm, activations,
        pooling or adds. The backward pass computes each trained layer's weight gradient and, unless nothing before
        it is trained (the image; a whitening stem without a bias), its input gradient: each as many FLOPs as its
        forward pass. The frozen whitening filters have no backward pass."""
        self.validate()
        exp = EXPANSION[self.block]
        forward = backward = 0
        grad_in = False  # whether the current feature map needs a gradient (something before it is trained)

        def conv(c_in: int, c_out: int, k: int, side_out: int, trained: bool = True) -> None:
            nonlocal forward, backward
            flops = 2 * k * k * c_in * c_out * side_out * side_out
            forward += flops
            backward += trained * flops * (1 + grad_in)

        side, c_in = self.stem_size(), self.stem_channels()
        conv(self.in_channels, c_in, WHITEN_KERNEL if self.stem == "whiten" else self.stage_kernels()[0], side,
             trained=self.stem == "conv")
        grad_in = self.stem == "conv" or self.whiten_bias_params() > 0
        for i, (n, c, f, k, s) in enumerate(zip(self.blocks, self.stage_channels(), self.stage_kernels(),
                                                self.stage_shortcut_kernels(), self.stage_sizes())):
            if self.downsample == "pool":  # conv at the incoming size, then the 2x2 max-pool
                conv(c_in, c * exp, f, side)
                c_in, side, grad_in = c * exp, s, True
            for b in range(n):
                projects = self.residual and (side != s or c_in != c * exp)  # no shortcut without `residual`
                if self.block == "bottleneck":
                    conv(c_in, c, 1, side)
                else:
                    conv(c_in, c, f, s)
                if projects:
                    conv(c_in, c * exp, k, s)
                grad_in = True
                if self.block == "basic":
                    conv(c, c, f, s)
                elif self.block == "bottleneck":
                    conv(c, c, f, s)
                    conv(c, c * exp, 1, s)
                c_in, side = c * exp, s
        features = c_in * self.final_size() ** 2
        forward += 2 * features * self.num_classes
        backward += 2 * features * self.num_classes * (1 + grad_in)
        return {"forward": forward, "forward_backward": forward + backward}

    def gflop_per_image(self) -> float:
        """Forward+backward GFLOP of one training image (count_flops): the compute budget's count."""
        return self.count_flops()["forward_backward"] / 1e9

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _block_params(block: str, c_in: int, c: int, f: int, k: int, stride: int,
                  conv_bn: Callable[[int, int, int], int], residual: bool = True) -> int:
    """A block's parameters, with `conv_bn(c_in, c_out, k)` the count of one conv + BatchNorm (no projection
    shortcut without `residual`)."""
    c_out = c * EXPANSION[block]
    if block == "basic":
        params = conv_bn(c_in, c, f) + conv_bn(c, c, f)
    elif block == "single":
        params = conv_bn(c_in, c, f)
    else:
        params = conv_bn(c_in, c, 1) + conv_bn(c, c, f) + conv_bn(c, c_out, 1)
    if residual and (stride != 1 or c_in != c_out):
        params += conv_bn(c_in, c_out, k)
    return params


def budget_excess(spec: ModelSpec, budget: int, max_gflops: float | None = None) -> str:
    """What in `spec` is over the parameter budget or the compute budget (forward+backward GFLOP per image), in
    words; "" when the design fits both."""
    params, gflops = spec.count_params(), spec.gflop_per_image()
    over = [f"{params:,} parameters > budget {budget:,}"] if params > budget else []
    if max_gflops is not None and gflops > max_gflops:
        over.append(f"{gflops:.4f} GFLOP per image > max_gflops {max_gflops:g}")
    return " and ".join(over)


def check_budget(spec: ModelSpec, budget: int, max_gflops: float | None = None) -> int:
    """Return the parameter count, or raise BudgetError naming what is over (parameters, or forward+backward
    GFLOP per image when `max_gflops` is given) and the widest C_1 (or list of widths) that fits both."""
    over = budget_excess(spec, budget, max_gflops)
    if not over:
        return spec.count_params()
    msg = f"the design is over the budget: {over}"
    try:
        c1 = fit_channels(spec, budget, max_gflops)
        fitted = with_width(spec, c1)
        what = "C_1" if isinstance(spec.channels, int) else "scaling of the widths"
        msg += (f"; the largest {what} that fits the rest of the design is {c1} ({fitted.count_params():,} "
                f"parameters, {fitted.gflop_per_image():.4f} GFLOP per image): "
                f"--set model.channels={json.dumps(c1, separators=(',', ':'))}")
    except BudgetError as e:
        msg += f"; {e}"
    raise BudgetError(msg)


def with_width(spec: ModelSpec, width: int | list[int]) -> ModelSpec:
    """`spec` with C_1 = `width` (an int); with a list of widths, all scaled together so that the first is
    `width` (each at least 1), or replaced by `width` when it is a list."""
    if isinstance(width, list) or isinstance(spec.channels, int):
        return dataclasses.replace(spec, channels=width)
    first = spec.channels[0]
    return dataclasses.replace(spec, channels=[max(1, round(c * width / first)) for c in spec.channels])


def fit_channels(spec: ModelSpec, budget: int, max_gflops: float | None = None) -> int | list[int]:
    """The widest C_1 whose design (everything else unchanged) fits `budget` parameters and, when given,
    `max_gflops` forward+backward GFLOP per image; for a list of widths, the widest list scaled together."""

    def fits(c: int) -> bool:
        return not budget_excess(with_width(spec, c), budget, max_gflops)

    if not fits(1):
        raise BudgetError(f"even C_1=1 is over budget ({budget_excess(with_width(spec, 1), budget, max_gflops)}): "
                          "use fewer stages or blocks")
    lo, hi = 1, 2
    while fits(hi):
        lo, hi = hi, hi * 2
    while hi - lo > 1:  # fits(lo) and not fits(hi); both counts grow with C_1
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo if isinstance(spec.channels, int) else with_width(spec, lo).channels
