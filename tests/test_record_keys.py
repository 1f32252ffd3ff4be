"""No module outside the run-record modules reads a run record's field by string key: every `x["KEY"]` and
`x.get("KEY", ...)` under src/ and benchmarks/ whose KEY is a field of a run record (summary.json, a metric row,
eval.json, a checkpoint's metadata, a search trial's attrs) reads an attribute of the typed record instead, so
that a renamed field fails where it is read, not silently at a distance."""
import ast
from dataclasses import fields
from pathlib import Path

from budgetnet.training.checkpoint import CheckpointMeta
from budgetnet.training.rundir import EvalRecord, MetricRow, RunSummary
from budgetnet.workflows.search.storage import TrialAttrs

REPO = Path(__file__).parents[1]
RECORDS = (RunSummary, MetricRow, EvalRecord, CheckpointMeta, TrialAttrs)
KEYS = {f.name for record in RECORDS for f in fields(record)} - {"extra", "_keys"}
# the modules that define the records, and so read and write their files' keys
DEFINING = {"src/budgetnet/training/rundir.py", "src/budgetnet/training/checkpoint.py",
            "src/budgetnet/workflows/search/storage.py"}
# dict reads that are no run record's, though their key is a field's name: {file: ({keys}, why)}
ALLOWED = {
    "src/budgetnet/training/optim.py": ({"lr", "params"}, "torch's optimizer param_groups entries"),
    "src/budgetnet/training/loop.py": ({"lr"}, "torch's optimizer param_groups entry, logged as MetricRow.lr"),
    "src/budgetnet/workflows/report.py": ({"lr", "params", "epochs", "status"},
                                         "torch's param_groups entry; report's own per-setting table rows"),
    "src/budgetnet/design/spec.py": ({"params"}, "ModelSpec.stage_table's rows"),
    "src/budgetnet/deploy/card.py": ({"params"}, "ModelSpec.stage_table's rows"),
    "src/budgetnet/console.py": ({"params", "design"}, "`budgetnet params`'s result and its stage table"),
    "src/budgetnet/evaluation/robustness.py": ({"corruption_accuracy", "corruption_error", "per_corruption"},
                                              "corruption_suite's result, copied into the EvalRecord"),
    "src/budgetnet/evaluation/corruptions.py": ({"per_corruption", "corruption_error", "images"},
                                               "corruption_suite's results, drawn; the release's file names"),
    "src/budgetnet/workflows/experiment/schema.py": ({"description"}, "an experiment's YAML as read"),
    "src/budgetnet/workflows/search/space.py": ({"description", "params"}, "a search space's YAML as read"),
    "src/budgetnet/workflows/search/worker.py": ({"device"}, "the space's base recipe (a dict of recipe keys)"),
    "src/budgetnet/workflows/search/report.py": ({"params"}, "its fronts by AXES name"),
    "benchmarks/gpu_check.py": ({"accuracy", "best", "cuda", "design", "device", "epoch", "epochs", "images_per_s",
                                 "run", "seconds", "status", "train_loss", "train_seconds", "val_acc"},
                                "the check's own stages, headers and result rows"),
    "benchmarks/vs_airbench.py": ({"accuracy", "params", "run", "seconds", "train_seconds"},
                                  "the comparison's own result rows"),
    "benchmarks/train_throughput.py": ({"images_per_s"}, "the benchmark's own result rows"),
    "benchmarks/augment_throughput.py": ({"device"}, "the benchmark's own result rows"),
}


def string_key_reads(source: str) -> list[tuple[int, str]]:
    """(line, key) of every `x["KEY"]` load and `x.get("KEY", ...)` call in `source` whose KEY is in KEYS."""
    found = []
    for node in ast.walk(ast.parse(source)):
        key = None
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and isinstance(node.slice, ast.Constant):
            key = node.slice.value
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
              and node.args and isinstance(node.args[0], ast.Constant)):
            key = node.args[0].value
        if isinstance(key, str) and key in KEYS:
            found.append((node.lineno, key))
    return found


def test_the_check_finds_a_record_read_by_key():
    assert string_key_reads('acc = summary["final_test_acc"]\nrow.get("val_acc", 0)\nd["x"] = 1\n') == [
        (1, "final_test_acc"), (2, "val_acc")]
    assert string_key_reads('summary["final_test_acc"] = 0.5\nsummary.final_test_acc\n') == []


def test_no_module_reads_a_run_record_by_string_key():
    files = sorted(p for folder in ("src", "benchmarks") for p in (REPO / folder).rglob("*.py"))
    reads = [f"{path}:{line}: [{key!r}]" for path in (p.relative_to(REPO).as_posix() for p in files)
             if path not in DEFINING for line, key in string_key_reads((REPO / path).read_text())
             if key not in ALLOWED.get(path, (set(),))[0]]
    assert reads == [], "read the typed record's attribute instead:\n" + "\n".join(reads)


def test_every_allowed_key_is_still_read_there():
    """An allowlist entry that nothing needs any more is removed, so the list stays honest."""
    for path, (keys, _) in ALLOWED.items():
        assert keys <= {key for _, key in string_key_reads((REPO / path).read_text())}, path
