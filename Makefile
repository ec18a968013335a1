# gradsweep: `make sweep` runs the example sweep, `make test` runs the tests.
# Both create the virtual environment in .venv and install the project when needed.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev

.PHONY: install test sweep bench tensorboard clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest

sweep: $(STAMP)
	$(BIN)/python experiments/triangle.py
	@echo "Watch it in TensorBoard: $(BIN)/python -m service tensorboard logs"
	@echo "  then open the link it prints (the best trials' curves); the HPARAMS tab compares all"

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]"
	$(BIN)/python benchmarks/engine_step.py

clean:
	rm -rf $(VENV) .pytest_cache
