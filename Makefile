# lstep: the two quick-start commands are `make demo` and `make test`.
# Both bootstrap .venv from uv.lock on a fresh machine (only Python 3.11 + pip needed).

SHELL := /bin/bash
.DEFAULT_GOAL := help

# No telemetry, ever: there is no internet at run time.
export MLFLOW_DISABLE_TELEMETRY := true
export BENTOML_DO_NOT_TRACK := true
export DO_NOT_TRACK := true
export SPARK_LOCAL_IP := 127.0.0.1
export UV_NO_PROGRESS := 1

PYTHON ?= python3
UV_VERSION := 0.13.9
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
VENV := .venv
STAMP := $(VENV)/.synced
RUN := $(VENV)/bin

.PHONY: help setup demo test lint format bench clean

help:
	@echo "make demo    set up .venv and run the main job on the embedded defaults"
	@echo "make test    set up .venv and run ruff (lint + format check) and pytest"
	@echo "make bench   run the benchmarks (minutes; prints figures)"
	@echo "make clean   remove .venv and the .lstep workspace"

$(UV):
	$(PYTHON) -m pip install --quiet --user "uv==$(UV_VERSION)" || $(PYTHON) -m pip install --quiet "uv==$(UV_VERSION)"

$(STAMP): uv.lock pyproject.toml | $(UV)
	$$(command -v uv || echo $(UV)) sync --frozen --python $(PYTHON)
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(RUN)/lstep demo

lint: $(STAMP)
	$(RUN)/ruff check .
	$(RUN)/ruff format --check .

format: $(STAMP)
	$(RUN)/ruff check --fix .
	$(RUN)/ruff format .

test: lint
	$(RUN)/pytest -n 2 --dist loadfile

bench: $(STAMP)
	$(RUN)/python benchmarks/features_scale.py --customers 1000000

clean:
	rm -rf $(VENV) .lstep
