# Two commands: `make run` (whole pipeline on the simulated cohort) and `make test`.
PYTHON ?= python3
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-postgres setup browser lint lock bench clean mutation

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The installer: uv (pinned; about 25 s for the whole lock from an empty cache on 2 cores, pip took about
# 90 s) reading the same exact-pin requirements.lock; pip when uv cannot be installed or fails.
# --compile-bytecode as pip does: without it the first `make run` compiled every library on import
# (a fresh clone's make run took 123 s against 79 s with compiled libraries).
UV_VERSION := 0.13.9

# Reinstall only when the lock or the project metadata changes (idempotent).
$(STAMP): requirements.lock pyproject.toml | $(BIN)/python
	@echo "setup: installing the pinned dependencies (requirements.lock) into $(VENV)/"
	@if $(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION) \
	    && $(BIN)/uv pip install --compile-bytecode --python $(BIN)/python -r requirements.lock; then :; \
	else echo "setup: uv unavailable, installing with pip (slower)"; \
	  $(BIN)/python -m pip install --disable-pip-version-check --progress-bar on -r requirements.lock; fi
	@echo "setup: installing the project (editable)"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation --config-settings editable_mode=compat -e .
	touch $(STAMP)

setup: $(STAMP)

# DVC ends every repro with "Use `dvc push` ...", which points a first-time user at a remote the project
# does not have: filtered here (DVC's -q would also hide its error messages). pipefail keeps its status.
run: setup
	@set -o pipefail; PYTHONUNBUFFERED=1 PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro 2>&1 \
	  | { grep --line-buffered -v '^Use `dvc push` to send your updates to remote storage.$$' || true; }
	@echo ""
	@echo "Done. Results:"
	@echo "  reports/ingest.json         ingest counts (rows read / accepted / quarantined)"
	@echo "  data/interim/quarantine.csv every rejected row with its reason"
	@echo "  data/processed/             landmark feature matrix, out-of-fold predictions"
	@echo "  reports/summary.json        headline AUROC and calibration slope (dvc metrics show)"
	@echo "  reports/metrics.json        every metric per target and landmark, with CIs and baselines"
	@echo "  reports/plots/              ROC, PR, calibration, decision curves (dvc plots show)"
	@echo "  models/<target>/            trained boosters and calibrators"
	@echo "  reports/patients/index.html one page per patient: risk, alert rule, drivers, marker curves"
	@echo "  reports/model_card.html     model card (TRIPOD+AI items, sites, small-data notes)"
	@echo "  reports/shap/               global SHAP plots and summary table"
	@echo "  reports/feature_set.json    the analytes chosen for this cohort (crs featurize --list)"
	@echo "  MLflow runs:                $(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db"

# The browser tests render pages in headless Debian Chromium: installed here when running as root on
# Debian; elsewhere they skip with one line (and fail under CI=true, where they must run).
browser:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "Installing Chromium (Debian package) for the browser tests..."; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
	    || echo "note: could not install Chromium; the browser tests will be skipped"; \
	else echo "note: Chromium not installed (needs root): the browser tests will be skipped"; fi

test: setup browser
	$(BIN)/python -m pytest

# The OMOP adapter against a throwaway PostgreSQL server (needs Debian's postgresql package or initdb on
# the PATH; fails instead of skipping when none can start).
test-postgres: setup
	CI=true $(BIN)/python -m pytest tests/pipeline/test_adapters_omop.py

lint: setup
	$(BIN)/ruff check .

# Regenerate the lock from the current environment (no index URLs, no editable project line).
lock:
	$(BIN)/python -m pip freeze --all --exclude-editable --exclude crs-pipeline --exclude pip --exclude uv | grep -v '^-' > requirements.lock

bench: setup
	$(BIN)/python benchmarks/bench_simulate.py
	$(BIN)/python benchmarks/bench_ingest.py
	$(BIN)/python benchmarks/bench_featurize.py
	$(BIN)/python benchmarks/bench_predict.py
	$(BIN)/python benchmarks/bench_real_cohort.py
	$(BIN)/python benchmarks/bench_scaling.py

# Mutation testing of the modules where a one-line bug hurts patients ([tool.mutmut] in pyproject.toml);
# separate from `make test` (3,717 mutants in about 8 minutes on 2 cores). Fails below 85 %; docs/testing.md.
mutation: setup
	rm -rf mutants
	$(BIN)/mutmut run --max-children 2 > mutants.log 2>&1 || (tail -c 2000 mutants.log; exit 1)
	$(BIN)/python tools/mutation_score.py --list

clean:
	rm -rf data/raw data/interim data/processed reports/* models/*/ mlflow.db mlruns
