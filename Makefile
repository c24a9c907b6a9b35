# `make demo` and `make test` each build their own virtualenv in .venv (Python 3.11+) and run.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch/torchvision are pinned to the builds this project is tested with; override for your CUDA.
TORCH  ?= torch==2.14.1 torchvision==0.29.1

.PHONY: demo test clean

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[test,mmaction]"
	touch $@

# Every distiller on the embedded synthetic dataset, 3 seeds, then its leaderboard; run again, it starts nothing.
demo: $(VENV)/.installed
	$(BIN)/kdbench sweep leaderboards/demo.toml --max-parallel 2
	$(BIN)/kdbench leaderboard leaderboards/demo.toml

test: $(VENV)/.installed
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) kdbench-runs mlruns mlartifacts mlflow.db
