# budgetnet: `make demo` trains the demo recipe, `make test` runs the test suite; both set everything up first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# CIFAR-10: $BUDGETNET_DATA if set, else the workspace copy beside this repo if there is one,
# else budgetnet downloads it to ~/.cache/budgetnet on first use.
export BUDGETNET_DATA ?= $(abspath $(wildcard ../shared/data/cifar10))

.PHONY: setup demo test test-quick postgres clean

$(BIN)/budgetnet: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[dev,search,export,tensorboard,bench]'
	$(BIN)/pip install -q --no-deps imagecorruptions  # only its frost photographs are used (eval --corruptions)
	touch $@

setup: $(BIN)/budgetnet

demo: setup
	$(BIN)/budgetnet train --recipe demo --out runs/demo-$$(date +%Y%m%d-%H%M%S)

# PostgreSQL binaries for the multi-worker search tests (Debian's package; the tests start and remove
# their own throwaway server, and skip with a reason where the binaries are missing).
postgres:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; } \
	      || echo "note: installing postgresql failed; the PostgreSQL search tests will skip"; \
	  else echo "note: no PostgreSQL binaries (apt-get install postgresql); those search tests will skip"; fi; fi

test: setup postgres
	$(BIN)/python -m pytest -q -rs

# the suite without the tests marked slow (real data, multi-process DDP and PostgreSQL workers): for a quick look
test-quick: setup
	$(BIN)/python -m pytest -q -rs -m "not slow"

clean:
	rm -rf $(VENV) runs results
