"""Design search under the parameter and compute budgets with Optuna, from one process to many workers on many
machines.

A space file names a `base` recipe and, in `params`, maps dotted recipe keys to an int or float range
`{low, high, step?, log?}`, to `{choices: [...]}` or to a fixed value. Every trial is a normal run directory
OUT/trials/<number>; the study stores that path relative to OUT, and the trial's full recipe. The objective is
the best validation accuracy (data.val_size images held out of the training set): the test split never chooses
anything. A design over either budget (parameters; forward+backward GFLOP per image, `max_gflops`) is never
trained: an int range of C_1 is sampled after the rest of the design, within the widest C_1 that fits both, so
the sampler only ever sees values that were trained; below the range's low end the fitted C_1 is trained and
reported as the trial's value (repair "fit-channels") or the trial is pruned with user attr
`rejected: over_budget` (repair "reject").

Studies live in an RDB storage: a SQLite file by default, $BUDGETNET_STORAGE, or any SQLAlchemy URL (PostgreSQL)
shared by workers that all run the same command. A worker stopped by SIGINT or SIGTERM marks its trial FAIL at once;
a worker killed outright stops sending heartbeats and the next worker to start a trial marks it FAIL. Either way
the trial is queued again and the worker that takes it resumes its run directory from the last checkpoint.

    space.py      space files into a `Space`: distributions per recipe key; the designs trials may train in budget
    storage.py    the RDB storage: its URL, opening it, heartbeats and the requeue of silent trials, loading a study
    gpu.py        one GPU per worker on a machine, held with a lock file
    objective.py  one trial: a design sampled within the budget, trained, its validation accuracy to the pruner
    worker.py     `run_search`: this process's trials until the target is met, and a stop by signal
    cost.py       the dry run: an epoch of the smallest and largest admitted designs timed, the search's total
    report.py     what a study found: counts, top designs, the fronts vs PFLOP and parameters, importances
    errors.py     what the search raises
"""
from __future__ import annotations

from ...errors import UsageError

try:  # the search is an optional extra: say how to get it before any module of the search imports it
    import optuna
    import sqlalchemy
except ImportError as e:
    raise UsageError(f"the search needs Optuna ({e}): pip install 'budgetnet[search]'") from None
