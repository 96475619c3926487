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

.PHONY: help setup demo test lint format bench mutate clean

help:
	@echo "make demo    set up .venv and run the main job on the embedded defaults"
	@echo "make test    set up .venv and run ruff (lint + format check) and pytest"
	@echo "make bench   run the benchmarks (minutes; prints figures)"
	@echo "make mutate  mutation-test the critical modules (tens of minutes; not part of test)"
	@echo "make clean   remove .venv and the .lstep workspace"

$(UV):
	$(PYTHON) -m pip install --quiet --user "uv==$(UV_VERSION)" || $(PYTHON) -m pip install --quiet "uv==$(UV_VERSION)"

# Bytecode is compiled once at install: without it every process (each CLI call, each test's
# subprocess) compiles what it imports again when PYTHONDONTWRITEBYTECODE is set or the
# environment is read-only; `import pandas, pyarrow, sklearn, lightgbm, mlflow` took 5.6 s
# instead of 2.0 s on 2 cores.
$(STAMP): uv.lock pyproject.toml | $(UV)
	$$(command -v uv || echo $(UV)) sync --frozen --extra spark --compile-bytecode --python $(PYTHON)
	$(RUN)/python -m compileall -q -j 0 features models rules serving training
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

# Mutation testing with mutmut ([tool.mutmut] in pyproject.toml): each mutant runs against only
# the tests that call its function, and is stopped at a multiple of their clean time. MUTATE is the
# one list of what is mutated, as mutmut mutant names with wildcards: module.* for a module,
# module.x_function__mutmut_* for a function, module.xǁClassǁmethod__mutmut_* for a method. Edit
# it to add or drop code. Store planning is the whole of serving/core/planning.py (pure: what a
# batch day or an override writes). The surviving mutants and why they survive: docs/mutation.md.
MUTATE := \
	rules.engine.* \
	rules.decisions.* \
	rules.conditions.* \
	features.windows.* \
	features.window_sql.* \
	features.feature_sql.* \
	features.workspace.* \
	features.labels.* \
	models.calibration.xǁVennAbersCalibrationǁ* \
	models.churn.x_decision_confidence__mutmut_* \
	models.churn.xǁChurnModelǁ_calibrated__mutmut_* \
	models.churn.x__checked_predictions__mutmut_* \
	serving.core.planning.*

# Prints, per module, the mutants killed of those run and the score, then every survivor.
MUTATION_SCORES := $$2 != "not" { name = $$1; sub(/:$$/, "", name); module = name; \
	sub(/[.]x[_ǁ].*/, "", module); run[module]++; if ($$2 == "killed") killed[module]++; \
	else if ($$2 == "survived") survivors = survivors "  " name "\n" } \
	END { for (m in run) printf "%-18s %4d of %4d killed  %5.1f%%\n", m, killed[m], run[m], \
	100 * killed[m] / run[m]; printf "survivors:\n%s", survivors }

mutate: $(STAMP)
	rm -rf mutants
	$(RUN)/mutmut run $(foreach name,$(MUTATE),'$(name)')
	$(RUN)/mutmut results --all=true | awk '$(MUTATION_SCORES)' | tee mutants/scores.txt

clean:
	rm -rf $(VENV) .lstep mutants
