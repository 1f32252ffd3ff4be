"""The run directory: every file a run holds, each with one path and one reader and writer (`RunFiles`).

    runs/mine/
      recipe.yaml       the resolved recipe (after --resume --set: the one the run continues with)
      metrics.jsonl     one row per finished epoch (MetricRow)
      overrides.jsonl   each --resume --set change and the epoch it took effect from
      summary.json      status, figures and provenance (RunSummary)
      checkpoints/      last.pt and best.pt (their contents: checkpoint.py, their metadata CheckpointMeta)
      eval.json         `budgetnet eval`'s results (EvalRecord), with confusion.png, reliability.png and corruptions.png
      MODEL_CARD.md     `budgetnet card`'s card, with MODEL_CARD_curves.png
      train.log         what the train process printed, when `budgetnet experiment` started it
      .lock             the writer's flock, holding its PID

Every file is written through budgetnet.atomic: the recipe, the summary, eval.json and the checkpoints are replaced
whole under a fresh temporary name, metric rows are appended whole, and nothing is written through a symbolic link
(a run directory whose own files are links is refused). JSON is standard: a number that is not finite is written as
null. A torn last row (a writer killed mid-append) is dropped with a note; any other damage is a one-line
DamagedFileError naming the file and line.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import sys
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import IO, Any, ClassVar, Iterator, TypeVar

import yaml

from .. import atomic
from ..config import Recipe, RecipeError, diff_recipes, from_dict, read_yaml
from ..errors import UsageError

class RunBusyError(UsageError):
    """Another process is writing the run directory (it holds its lock)."""


class LinkedRunError(UsageError):
    """A file of the run directory is a symbolic link, which budgetnet neither writes through nor replaces."""


class DamagedFileError(UsageError):
    """A run-directory file that does not parse (beyond a torn last metric row, which is dropped)."""


SUMMARY_MISSING = "summary missing"  # the status of a run whose metric rows exist but whose summary.json does not
R = TypeVar("R", bound="Record")


@dataclass
class Record:
    """A run file's JSON object as a typed record: one field per key (None where a file written by an older
    budgetnet lacks it), the keys this budgetnet does not know in `extra`, and the keys in the order they were read,
    so that a record read and written back is byte-identical. `OPTIONAL` keys are written only when not None."""

    extra: dict[str, Any] = field(default_factory=dict, kw_only=True)
    _keys: list[str] | None = field(default=None, init=False, repr=False, compare=False)  # the file's, as read

    OPTIONAL: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def keys(cls) -> list[str]:
        """The keys the file holds, in its order (`extra`'s after them)."""
        return [f.name for f in fields(cls) if f.name not in ("extra", "_keys")]

    def to_dict(self) -> dict[str, Any]:
        """The record as its file holds it: every key in `keys()` order (an OPTIONAL one only when set), then
        `extra`. A record read by `from_dict` keeps the keys it was read with, in their order, and adds after them
        only the fields set since."""
        values = {k: getattr(self, k) for k in self.keys()}
        order = self._keys if self._keys is not None else [
            k for k, v in values.items() if k not in self.OPTIONAL or v is not None]
        out = {k: values[k] if k in values else self.extra[k] for k in order}
        out.update((k, v) for k, v in values.items() if k not in out and v is not None)
        out.update((k, v) for k, v in self.extra.items() if k not in out)
        return out

    @classmethod
    def from_dict(cls: type[R], d: dict[str, Any]) -> R:
        """The record of the JSON object `d`, as any budgetnet wrote it: a key it lacks is None, a key this
        budgetnet does not know goes to `extra`."""
        known = cls.keys()
        record = cls(**{k: d.get(k) for k in known}, extra={k: v for k, v in d.items() if k not in known})
        record._keys = list(d)
        return record


@dataclass
class RunSummary(Record):
    """summary.json: what a run reached so far (`summarize`), and what it was trained with (provenance: the
    device, the software's versions, budgetnet's commit; `error` says why a run stopped early)."""

    status: str | None
    params: int | None
    epochs: int | float | None
    epochs_done: int | None
    final_test_acc: float | None
    final_test_loss: float | None
    best_by: str | None
    best_epoch: int | None
    best_acc: float | None
    best_test_acc: float | None
    best_seen_test_acc: float | None
    best_seen_test_epoch: int | None
    train_seconds: float | None
    images_per_s: float | None
    gflop_per_image: float | None
    train_images: int | None
    train_pflop: float | None
    description: str | None
    device: str | None = None
    device_name: str | None = None
    torch: str | None = None
    cuda: str | None = None
    budgetnet_version: str | None = None
    budgetnet_commit: str | None = None
    error: str | None = None

    OPTIONAL = ("error",)


@dataclass
class MetricRow(Record):
    """One row of metrics.jsonl: a finished epoch's training figures, its val_* and test_* on the epochs evaluated
    (every eval_every, and the last), and plain_test_acc (the test accuracy without TTA) every test_every epochs."""

    epoch: int
    lr: float
    train_loss: float
    train_acc: float
    seconds: float
    images_per_s: float
    val_loss: float | None = None
    val_acc: float | None = None
    test_loss: float | None = None
    test_acc: float | None = None
    plain_test_acc: float | None = None

    OPTIONAL = ("val_loss", "val_acc", "test_loss", "test_acc", "plain_test_acc")


@dataclass
class EvalRecord(Record):
    """eval.json: `budgetnet eval`'s scores of a run's checkpoint on the test set (accuracy, loss, per class and
    the confusion matrix [true class][predicted class]), and, when measured, its calibration (ece, on ece_images
    images) and its accuracy under the CIFAR-10-C corruptions (per corruption and severity, and their mean)."""

    run: str | None = None
    checkpoint_epoch: int | None = None
    params: int | None = None
    accuracy: float | None = None
    loss: float | None = None
    images: int | None = None
    per_class_accuracy: dict[str, float] | None = None
    confusion_matrix: list[list[int]] | None = None
    ece: float | None = None
    ece_images: int | None = None
    corruption_accuracy: float | None = None
    corruption_error: float | None = None
    per_corruption: dict[str, dict[str, float]] | None = None
    corruption_source: str | None = None
    corruption_images: int | None = None
    corruptions_generated: list[str] | None = None
    corruptions_read: dict[str, str] | None = None
    corruptions_skipped: dict[str, str] | None = None


EvalRecord.OPTIONAL = tuple(EvalRecord.keys())  # eval.json holds what was measured, nothing else


@dataclass
class RunRecord:
    """A run directory as read from disk: its recipe, summary (None before the run wrote one and any epoch
    finished) and metric rows."""

    path: Path
    recipe: Recipe
    summary: RunSummary | None
    metrics: list[MetricRow]

    @property
    def status(self) -> str:
        """The summary's status, "not started" when there is none."""
        status = self.summary.status if self.summary is not None else None
        return status if status is not None else "not started"


@dataclass
class RunFiles:
    """The files of a run directory (see the module docstring): their paths, readers and writers."""

    root: Path
    _noted: set[Path] = field(default_factory=set, init=False, repr=False, compare=False)  # torn rows said once

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    # ---- paths ----

    @property
    def recipe(self) -> Path:
        return self.root / "recipe.yaml"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def overrides(self) -> Path:
        return self.root / "overrides.jsonl"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.pt"

    @property
    def eval(self) -> Path:
        return self.root / "eval.json"

    @property
    def confusion_plot(self) -> Path:
        return self.root / "confusion.png"

    @property
    def reliability_plot(self) -> Path:
        return self.root / "reliability.png"

    @property
    def corruptions_plot(self) -> Path:
        return self.root / "corruptions.png"

    @property
    def card(self) -> Path:
        return self.root / "MODEL_CARD.md"

    @property
    def train_log(self) -> Path:
        return self.root / "train.log"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    # ---- readers and writers ----

    def read_recipe(self) -> Recipe:
        """The recorded recipe (keys added to budgetnet since take their defaults); a missing, broken or empty
        recipe.yaml is a one-line RecipeError."""
        if not self.recipe.is_file():
            raise RecipeError(f"{self.root} is not a run directory (no recipe.yaml): pass folders written by "
                              "`budgetnet train` or `budgetnet experiment`")
        return from_dict(Recipe, read_yaml(self.recipe)[0])

    def write_recipe(self, recipe: Recipe) -> None:
        """Replace recipe.yaml with `recipe`, resolved, in the recipe's key order."""
        atomic.write_bytes(self.recipe, recipe_yaml(recipe).encode())

    def read_metrics(self) -> list[MetricRow]:
        """The per-epoch metric rows ([] before the first epoch finished)."""
        return [MetricRow.from_dict(r) for r in self._read_jsonl(self.metrics)]

    def append_metrics(self, row: MetricRow) -> None:
        """Add one epoch's row (a full disk raises DiskFullError)."""
        atomic.append(self.metrics, dumps(row.to_dict()) + "\n")

    def write_metrics(self, rows: list[MetricRow]) -> None:
        """Replace the metric rows atomically (a resume drops the rows after its checkpoint)."""
        atomic.write_bytes(self.metrics, "".join(dumps(r.to_dict()) + "\n" for r in rows).encode())

    def read_overrides(self) -> list[dict]:
        """Each `--resume --set` record: {"from_epoch": N, "changes": {key: {"from": old, "to": new}}}."""
        return self._read_jsonl(self.overrides)

    def append_override(self, from_epoch: int, changes: dict[str, tuple[Any, Any]]) -> None:
        """Record the recipe changes {key: (old, new)} that take effect from epoch `from_epoch` (1-based)."""
        atomic.append(self.overrides, dumps({"from_epoch": from_epoch, "changes": {
            k: {"from": old, "to": new} for k, (old, new) in sorted(changes.items())}}) + "\n")

    def read_summary(self) -> RunSummary | None:
        """summary.json (None before the run wrote one)."""
        return RunSummary.from_dict(_read_json(self.summary)) if self.summary.is_file() else None

    def write_summary(self, summary: RunSummary) -> None:
        """Replace summary.json atomically, so that a reader or a kill never sees half of it."""
        atomic.write_bytes(self.summary, dumps(summary.to_dict(), indent=2).encode())

    def read_run(self) -> RunRecord:
        """The run directory's recipe, summary and metric rows; RecipeError when it is not a run directory. Without
        summary.json, the summary is worked out from the metric rows (status SUMMARY_MISSING; no provenance)."""
        recipe, summary, metrics = self.read_recipe(), self.read_summary(), self.read_metrics()
        if summary is None and metrics:
            summary = summarize(recipe, recipe.model.count_params(), metrics, SUMMARY_MISSING)
        return RunRecord(self.root, recipe, summary, metrics)

    def read_eval(self) -> EvalRecord | None:
        """eval.json (None before `budgetnet eval` wrote one)."""
        return EvalRecord.from_dict(_read_json(self.eval)) if self.eval.is_file() else None

    def write_eval(self, record: EvalRecord) -> None:
        """Replace eval.json atomically with `record` (the folder is created when missing)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.refuse_links()
        atomic.write_bytes(self.eval, dumps(record.to_dict(), indent=2).encode())

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Create the run directory and hold its lock for the block: one writer per run directory.

        The lock is an flock on `.lock`, which holds the writer's PID; the kernel drops it when the process ends
        however it ends, so a killed writer leaves nothing stuck. A second writer is refused with RunBusyError, a
        run directory whose files are links with LinkedRunError.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        self.refuse_links()
        try:
            fd = os.open(self.lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as e:
            if not os.path.islink(self.lock):
                raise
            raise self._linked(self.lock) from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
                raise RunBusyError(f"{self.root} is being written by another budgetnet process (PID {pid}): wait for "
                                   "it to end or stop it, then rerun; one run directory takes one writer") from None
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            yield
        finally:
            os.close(fd)  # releases the lock

    def open_log(self) -> IO[str]:
        """`train.log` opened for appending without following a link (a link there raises LinkedRunError)."""
        try:
            fd = os.open(self.train_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError:
            if not os.path.islink(self.train_log):
                raise
            raise self._linked(self.train_log) from None
        return os.fdopen(fd, "a")

    def remove_partial_writes(self) -> None:
        """Delete the `.tmp` files a killed writer left behind (the files they were replacing are intact)."""
        for folder in (self.root, self.checkpoints):
            for tmp in folder.glob(f"*{atomic.TMP_SUFFIX}"):
                tmp.unlink(missing_ok=True)

    def refuse_links(self) -> None:
        """Raise LinkedRunError when one of the run directory's own files (or checkpoints/) is a symbolic link:
        a link there would send a write, or the next reader, to a file outside the run."""
        paths = [getattr(self, name) for name, value in vars(RunFiles).items() if isinstance(value, property)]
        for path in paths:
            if path.is_symlink():
                raise self._linked(path)

    def _linked(self, path: Path) -> LinkedRunError:
        return LinkedRunError(f"{path} is a symbolic link: budgetnet does not write through links in a run directory "
                              f"(it could overwrite the file linked to); replace it with the file itself, or use "
                              "another run directory")

    def _read_jsonl(self, path: Path) -> list[dict]:
        """The rows of a JSON-lines file ([] when missing); a torn last line (no newline after it: a write cut
        short) is dropped with a note on stderr, once; any other line that is not a JSON object is a
        DamagedFileError naming the file and line."""
        if not path.is_file():
            return []
        text = path.read_text(errors="replace")
        lines = text.split("\n")  # the last item is "" when the file ends with a newline
        rows = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                if number == len(lines):  # a torn append
                    if path not in self._noted:
                        self._noted.add(path)
                        print(f"note: {path}: line {number} is cut short (a write that did not finish), dropped",
                              file=sys.stderr)
                    break
                raise DamagedFileError(f"{path}, line {number}: not a JSON row ({e.msg}); the file is damaged: "
                                       "restore it, or delete that line") from None
            if not isinstance(row, dict):
                raise DamagedFileError(f"{path}, line {number}: not a JSON object; the file is damaged: restore it, "
                                       "or delete that line")
            rows.append(row)
        return rows


def recipe_yaml(recipe: Recipe) -> str:
    """`recipe` as recipe.yaml holds it."""
    return yaml.safe_dump(recipe.to_dict(), sort_keys=False)


def recipe_changes(recorded: Recipe, recipe: Recipe) -> dict[str, tuple[Any, Any]]:
    """{dotted key: (recorded value, new value)} wherever `recipe` differs from `recorded`, both compared as
    recipe.yaml records them (through YAML, so that a tuple and the list it reads back as are equal)."""
    as_recorded = lambda r: yaml.safe_load(recipe_yaml(r))
    return diff_recipes(as_recorded(recorded), as_recorded(recipe))


def summarize(recipe: Recipe, params: int, history: list[MetricRow], status: str, views: int = 1,
              **provenance: str | None) -> RunSummary:
    """What a run reached so far; `final_test_acc` is the honest figure, `best_*` is chosen on validation
    when there is a validation split (on test otherwise) among the epochs evaluated every eval_every, and
    `best_seen_*` is the best plain test accuracy (no TTA) recorded every test_every epochs, chosen on the test
    set as the study did (None without test_every). Its compute: `train_images`, the images the network trained
    on (each training image `views` times: the augmentation's views), times the design's forward+backward
    `gflop_per_image` is `train_pflop` (evaluation not counted). `provenance` sets RunSummary's provenance fields
    (device, ..., error)."""
    images = views * sum(round(r.images_per_s * r.seconds) for r in history)
    gflop = recipe.model.gflop_per_image()
    last = history[-1] if history else None
    key = "val_acc" if any(r.val_acc is not None for r in history) else "test_acc"
    best_row = max((r for r in history if getattr(r, key) is not None), key=lambda r: getattr(r, key), default=None)
    seen_row = max((r for r in history if r.plain_test_acc is not None), key=lambda r: r.plain_test_acc, default=None)
    return RunSummary(
        status=status, params=params, epochs=recipe.epochs, epochs_done=len(history),
        final_test_acc=last and last.test_acc, final_test_loss=last and last.test_loss, best_by=key,
        best_epoch=best_row and best_row.epoch, best_acc=best_row and getattr(best_row, key),
        best_test_acc=best_row and best_row.test_acc, best_seen_test_acc=seen_row and seen_row.plain_test_acc,
        best_seen_test_epoch=seen_row and seen_row.epoch, train_seconds=sum(r.seconds for r in history),
        images_per_s=(sum(r.images_per_s for r in history) / len(history)) if history else None,
        gflop_per_image=gflop, train_images=images, train_pflop=gflop * images / 1e6, description=recipe.description,
        **provenance)


def default_run_dir(name: str) -> Path:
    """runs/<recipe name>-<local time>, the run directory when none is given."""
    return Path("runs") / f"{Path(name).stem}-{datetime.now():%Y%m%d-%H%M%S}"


def finite(obj: Any) -> Any:
    """`obj` with every NaN or infinite float replaced by None, so that it is standard JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def dumps(obj: Any, **kwargs: Any) -> str:
    """Standard JSON of `obj` (NaN and infinities as null: JavaScript and jq reject bare NaN)."""
    return json.dumps(finite(obj), allow_nan=False, **kwargs)


def _read_json(path: Path) -> dict:
    """A JSON object file ({} when missing); one that does not parse (truncated, edited) is a DamagedFileError
    naming the file and line."""
    if not path.is_file():
        return {}
    try:
        obj = json.loads(path.read_text(errors="replace"))
    except json.JSONDecodeError as e:
        raise DamagedFileError(f"{path}, line {e.lineno}: not valid JSON ({e.msg}); the file is damaged (truncated?): "
                               "restore it, or delete it") from None
    if not isinstance(obj, dict):
        raise DamagedFileError(f"{path}, line 1: not a JSON object; the file is damaged: restore it, or delete it")
    return obj
