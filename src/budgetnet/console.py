"""What the commands print: each command's result (a dict, also what --json prints) as the text a person reads."""
from __future__ import annotations


def stage_table(rows: list[dict]) -> str:
    """The per-stage table of a design as aligned text."""
    cols = ["layer", "output", "channels", "kernel", "shortcut", "blocks", "params"]
    cells = [[f"{r[c]:,}" if c == "params" else str(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(values, widths)))

    return "\n".join([line(cols), line(["-" * w for w in widths]), *map(line, cells)])


def flops_line(flops: dict, image_size: int) -> str:
    """{"forward": ..., "forward_backward": ...} FLOPs per image, in GFLOP."""
    return (f"{flops['forward'] / 1e9:.3f} GFLOP per {image_size}x{image_size} image forward, "
            f"{flops['forward_backward'] / 1e9:.3f} forward+backward")


def design_text(result: dict) -> str:
    """`budgetnet params`: the stage table, the fitted C_1 if asked, the verdict against the budget, FLOPs."""
    params, budget = result["params"], result["budget"]
    max_gflops, gflops = result.get("max_gflops"), result["flops_per_image"]["forward_backward"] / 1e9
    lines = [stage_table(result["stages"])]
    if "fitted_channels" in result:
        fitted = str(result["fitted_channels"]).replace(" ", "")
        within = f"{budget:,}" + (f" and {max_gflops:g} GFLOP per image" if max_gflops is not None else "")
        lines.append(f"widest C_1 within {within}: {fitted} (--set model.channels={fitted})")
    verdict = (f"within budget ({budget - params:,} to spare)" if params <= budget
               else f"OVER budget by {params - budget:,}")
    lines.append(f"total {params:,} trainable parameters; budget {budget:,}: {verdict}")
    if max_gflops is not None:
        verdict = (f"within ({max_gflops - gflops:.4f} to spare)" if gflops <= max_gflops
                   else f"OVER by {gflops - max_gflops:.4f}")
        lines.append(f"compute {gflops:.4f} GFLOP per image forward+backward; max_gflops {max_gflops:g}: {verdict}")
    whole = result.get("params_whole_run", params)
    if whole != params:  # part of the network trains only for the first epochs, and counts in the budget
        lines.append(f"  {params:,} trained at some point of the run (the budget's count), "
                     f"{whole:,} for the whole run ({params - whole:,} frozen part-way)")
    lines.append(flops_line(result["flops_per_image"], result["design"]["image_size"]))
    return "\n".join(lines)


def run_text(out: str, status: str, acc: float | None) -> str:
    """`budgetnet train`: where the run is, how it ended (`status`), its final test accuracy `acc`."""
    return f"run {out}: {status}, final test accuracy " + (f"{acc:.4f}" if acc is not None else "none")


def export_text(result: dict) -> str:
    """`budgetnet export`: the files written and how closely they reproduce budgetnet's logits."""
    return (f"wrote {', '.join(result['files'])}; logits match budgetnet's "
            f"(max abs diff {result['max_abs_diff']:.1e})")


def predictions_text(predictions: list[dict]) -> str:
    """`budgetnet predict`: one line per image, its top-k classes with probabilities (ValueError for a
    probability that is not a number: never "nan%")."""
    if any(not 0 <= t["probability"] <= 1 for p in predictions for t in p["top_k"]):
        raise ValueError("a probability is not a number in [0, 1]: the model's outputs are not finite")
    return "\n".join(p["file"] + (f"[{p['index']}]" if "index" in p else "") + ": " + ", ".join(f"{t['label']} {t['probability']:.1%}" for t in p["top_k"])
                     for p in predictions)


def recipes_text(descriptions: dict[str, str]) -> str:
    """`budgetnet recipes`: each shipped recipe and its description."""
    return "\n".join(f"{name:<10} {text}" for name, text in descriptions.items())
