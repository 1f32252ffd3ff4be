#!/usr/bin/env bash
# The GPU machine's one command: every GPU target of the project (benchmarks/gpu_check.py) under an outer timeout.
#
# Here, once (builds what the GPU machine lacks; it has PyYAML but no package index):
#     mkdir -p .device && cp ../shared/data/cifar10/cifar10-jpeg.npz ../shared/tools/cifar10_from_jpeg.py .device/
#     cp ../shared/ref/airbench94_muon.py .device/   # the GPU machine has no ../shared: the job carries the script
#     benchmarks/gpu_job.sh --wheels-only      # airbench 0.1.8 and optuna's wheels (Python 3.12) in .device/wheels/
# On the GPU machine (device `run`, carry [".device"], timeout_s 600):
#     benchmarks/gpu_job.sh                    # results.md and results.json in $OUT
# Any further arguments go to gpu_check.py (--stage NAME, --seeds N, --smoke; --smoke needs no data set).
#
# The wheels install with --no-index into a target folder and budgetnet runs from PYTHONPATH=src (`pip install
# -e .` would fetch setuptools from an index). gpu_check's own deadline (480 s by default) ends each stage with
# what it measured; the outer `timeout` (JOB_TIMEOUT, 570 s) is the backstop under a 600 s command limit.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WHEELS=${JOB_WHEELS:-.device/wheels}
SITE=${JOB_SITE:-/tmp/budgetnet-job-site}
if ! ls "$WHEELS"/airbench-0.1.8-py3-none-any.whl >/dev/null 2>&1; then
    echo "gpu_job: building the airbench 0.1.8 wheel into $WHEELS (needs a package index: run this here first)" >&2
    "$PYTHON" -m pip wheel -q --no-deps --wheel-dir "$WHEELS" airbench==0.1.8
fi
if [ "${1:-}" = "--wheels-only" ] && ! ls "$WHEELS"/optuna/optuna-*.whl >/dev/null 2>&1; then
    # the fidelity stage reads a search space: optuna and its needs, for the GPU machine's Python 3.12 (it has none)
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$WHEELS/optuna" optuna==5.1.0 alembic==1.20.1 colorlog==6.12.0 Mako==1.4.3 SQLAlchemy==2.1.9
fi
if [ "${1:-}" = "--wheels-only" ]; then exit 0; fi
optuna=()  # installed from the carried wheels only where this Python lacks it
"$PYTHON" -c "import optuna" 2>/dev/null || optuna=("$WHEELS"/optuna/*.whl)
"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl "${optuna[@]}"
export PYTHONPATH="src:$SITE" PYTHONUNBUFFERED=1
data=(--npz .device/cifar10-jpeg.npz)
for arg in "$@"; do [ "$arg" = "--smoke" ] && data=(); done
muon=()  # airbench94_muon.py carried in .device/; without it gpu_check looks in ../shared/ref (here) or skips it
[ -f .device/airbench94_muon.py ] && muon=(--airbench94-muon .device/airbench94_muon.py)
exec timeout "${JOB_TIMEOUT:-570}" "$PYTHON" benchmarks/gpu_check.py "${data[@]}" "${muon[@]}" --out "${OUT:-results/gpu_check}" "$@"
