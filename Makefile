# Two commands: `make run` (whole pipeline on the simulated cohort) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test setup lint lock bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the lock or the project metadata changes (idempotent).
$(STAMP): requirements.lock pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation --config-settings editable_mode=compat -e .
	touch $(STAMP)

setup: $(STAMP)

run: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro
	@echo ""
	@echo "Done. Results:"
	@echo "  reports/ingest.json         ingest counts (rows read / accepted / quarantined)"
	@echo "  data/interim/quarantine.csv every rejected row with its reason"
	@echo "  data/processed/             landmark feature matrix, out-of-fold predictions"
	@echo "  reports/metrics.json        metrics per target and landmark (dvc metrics show)"
	@echo "  reports/plots/              ROC, PR, calibration, decision curves (dvc plots show)"
	@echo "  models/<target>/            trained boosters and calibrators"
	@echo "  MLflow runs:                $(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db"

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .

# Regenerate the lock from the current environment (no index URLs, no editable project line).
lock:
	$(BIN)/python -m pip freeze --all --exclude-editable --exclude crs-pipeline --exclude pip | grep -v '^-' > requirements.lock

bench: setup
	$(BIN)/python benchmarks/bench_simulate.py
	$(BIN)/python benchmarks/bench_ingest.py
	$(BIN)/python benchmarks/bench_featurize.py
	$(BIN)/python benchmarks/bench_predict.py
	$(BIN)/python benchmarks/bench_real_cohort.py

clean:
	rm -rf data/raw data/interim data/processed reports/* models/*/ mlflow.db mlruns
