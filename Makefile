# budgetnet: `make demo` trains the demo recipe, `make test` runs the test suite; both set everything up first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# CIFAR-10: $BUDGETNET_DATA if set, else the workspace copy beside this repo if there is one,
# else budgetnet downloads it to ~/.cache/budgetnet on first use.
export BUDGETNET_DATA ?= $(abspath $(wildcard ../shared/data/cifar10))

.PHONY: setup demo test postgres clean

$(BIN)/budgetnet: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[dev,search,export,tensorboard]'
	touch $@

setup: $(BIN)/budgetnet

demo: setup
	$(BIN)/budgetnet train --recipe demo --out runs/demo-$$(date +%Y%m%d-%H%M%S)

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs results
