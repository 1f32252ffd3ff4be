"""The study's storage: an RDB (a SQLite file by default, $BUDGETNET_STORAGE, or any SQLAlchemy URL) shared by
every worker, whose heartbeats let a worker mark a dead worker's trial FAIL and queue it to resume; loading
a study from it; and what it records per trial (TrialAttrs)."""
from __future__ import annotations

import base64
import contextlib
import os
import random
import sys
import time
import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import optuna
import sqlalchemy
import torch
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial

from .errors import SearchError

@dataclass
class TrialAttrs:
    """What a trial records in the study's storage (its Optuna user attrs), each set once known; None where the
    trial has not set it: its run directory (relative to --out) and whole recipe, its design's parameters, GFLOP
    per image and design variables, how an over-budget design was repaired, why it was rejected untrained or
    failed before training, the earlier trial it repeats (not trained again), its final test accuracy and training
    PFLOP and seconds so far, and which validation images its best epoch got right (`pack_correct`)."""

    run_dir: str | None = None
    recipe: dict[str, Any] | None = None
    params: int | None = None
    gflop_per_image: float | None = None
    design: dict[str, Any] | None = None  # blocks, channels, kernel_size, shortcut_kernel_size, pool_size, block
    repaired: str | None = None
    rejected: str | None = None  # over_budget or invalid_design
    reason: str | None = None    # the rejection's message
    failed: str | None = None
    duplicate_of: int | None = None  # an earlier completed trial with the same values, whose accuracy it returned
    test_acc: float | None = None
    train_pflop: float | None = None
    train_seconds: float | None = None
    val_correct: str | None = None  # one bit per validation image, so that the report can pair two trials

    @classmethod
    def of(cls, trial: optuna.Trial | FrozenTrial) -> TrialAttrs:
        """The attrs `trial` recorded."""
        return cls(**{f.name: trial.user_attrs.get(f.name) for f in fields(cls)})

    @classmethod
    def record(cls, trial: optuna.Trial, **attrs: Any) -> None:
        """Record `attrs` (TrialAttrs fields, by name) for `trial` in the storage."""
        unknown = set(attrs) - {f.name for f in fields(cls)}
        if unknown:
            raise TypeError(f"not a trial attr: {', '.join(sorted(unknown))}")
        for name, value in attrs.items():
            trial.set_user_attr(name, value)


def pack_correct(correct: torch.Tensor) -> str:
    """A bool vector (one entry per image: right or wrong) as text for a user attr: its bits, base64."""
    return base64.b64encode(np.packbits(correct.cpu().numpy()).tobytes()).decode("ascii")


def unpack_correct(text: str, n: int) -> np.ndarray:
    """`pack_correct`'s text as n bools."""
    return np.unpackbits(np.frombuffer(base64.b64decode(text), np.uint8))[:n].astype(bool)


STORAGE_ENV = "BUDGETNET_STORAGE"  # the storage URL, so that a password never shows on a command line
MAX_RETRIES = 3  # times an interrupted or silent trial is queued again (each retry resumes its checkpoint)


@contextlib.contextmanager
def optuna_quiet() -> Iterator[None]:
    """Within the block, Optuna's experimental-feature warnings (heartbeats, the constant liar, the stale-trial
    retry) are not shown and Optuna logs errors only: budgetnet says what each trial became in its own lines.
    Both are restored when the block ends."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)


def storage_url(out: str | Path, storage: str | None = None) -> str:
    """The storage given, else $BUDGETNET_STORAGE, else the SQLite file OUT/search.db."""
    return storage or os.environ.get(STORAGE_ENV) or f"sqlite:///{(Path(out) / 'search.db').resolve()}"


def shown_url(url: str) -> str:
    """The URL with its password hidden, for messages and reports."""
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return url


def open_storage(url: str, heartbeat: int = 60, attempts: int = 5) -> optuna.storages.RDBStorage:
    """An RDB storage whose workers send a heartbeat every `heartbeat` s; silent for 2x that fails and requeues a trial.

    Workers started together on a fresh database race to create Optuna's tables (optuna#1092); the losers
    retry, and by then the tables exist.
    """
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine, heartbeat_interval=heartbeat,
                                              grace_period=2 * heartbeat, heartbeat_stale_trial_callback=_retry_stale)
        except ImportError as e:
            raise SearchError(f"storage {shown_url(url)}: missing database driver ({e}); for PostgreSQL "
                              "pip install 'budgetnet[search]' (psycopg2-binary)") from None
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError, sqlalchemy.exc.OperationalError) as e:
            if attempt + 1 == attempts:
                raise SearchError(f"cannot open storage {shown_url(url)}: {_reason(e)}") from None
            time.sleep(0.5 + random.random())
        except sqlalchemy.exc.SQLAlchemyError as e:  # a malformed URL, an unknown dialect
            raise SearchError(f"cannot open storage {shown_url(url)}: {_reason(e)}") from None


def _reason(error: sqlalchemy.exc.SQLAlchemyError) -> str:
    """The database's own words (the driver's first line), without SQLAlchemy's wrapping and links."""
    cause = getattr(error, "orig", None) or error
    return f"{type(cause).__name__}: {str(cause).strip().splitlines()[0]}"


def retry_trial(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue a failed trial again with its user attrs (its run directory), at most MAX_RETRIES times."""
    with optuna_quiet():
        RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)(study, trial)


def _retry_stale(study: optuna.Study, trial: FrozenTrial) -> None:
    print(f"study {study.study_name}: trial {trial.number} stopped sending heartbeats (its worker died): "
          "marked FAIL and queued to resume from its last checkpoint", file=sys.stderr)
    retry_trial(study, trial)


@optuna_quiet()
def load_study(storage: str, study_name: str | None = None) -> optuna.Study:
    """An existing study; the name may be left out when the storage holds exactly one."""
    store = open_storage(storage)
    names = optuna.get_all_study_names(store)
    if study_name is None:
        if len(names) != 1:
            raise SearchError(f"{shown_url(storage)} holds {len(names)} studies ({', '.join(names) or 'none'}): "
                              "choose one with --study")
        study_name = names[0]
    if study_name not in names:
        raise SearchError(f"{shown_url(storage)} has no study {study_name!r}; it holds: {', '.join(names) or 'none'}")
    return optuna.load_study(study_name=study_name, storage=store)
