"""Every example in the README and docs/ runs (issue 13: "every docs example executed by a test").

- every ``crs`` command line (code blocks and inline code) names a real subcommand and real options;
- the Python blocks of docs/features.md, docs/reports.md and docs/predict.md are executed as written,
  with the names they leave to the reader (``measurements``, ``bundle``, ...) bound to a small trained run;
- the REST request body of docs/predict.md goes through the MLflow model's ``predict`` and is answered
  with a probability for its patient.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer

from pipeline.cli import app
from tests.pipeline.test_explain import Run, trained_run

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
CRS_COMMAND = re.compile(r"(?:^|[\s`(/])crs ([a-z][a-z-]*)([^`\n|#]*)")


def blocks(path: Path, language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(path.read_text()) if lang == language]


def crs_commands() -> list[tuple[str, str, list[str]]]:
    """(file, subcommand, --options) of every ``crs <subcommand> ...`` in the docs."""
    found = []
    for path in DOCS:
        for match in CRS_COMMAND.finditer(path.read_text()):
            found.append((path.name, match.group(1), re.findall(r"--[a-z][a-z-]*", match.group(2))))
    return found


def test_every_crs_command_in_the_docs_is_real():
    commands = typer.main.get_command(app).commands
    seen = crs_commands()
    assert len(seen) > 20 and {"predict", "validate", "featurize", "promote"} <= {sub for _, sub, _ in seen}
    for name, sub, options in seen:
        assert sub in commands, f"{name}: `crs {sub}` is not a crs subcommand"
        known = {o for p in commands[sub].params for o in (*p.opts, *p.secondary_opts)} | {"--help"}
        assert not set(options) - known, f"{name}: `crs {sub}` has no option {sorted(set(options) - known)}"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    return trained_run(tmp_path_factory)


def _execute(code: str, namespace: dict) -> dict:
    exec(compile(code, "<docs example>", "exec"), namespace)  # noqa: S102 - the project's own docs
    return namespace


@pytest.fixture(scope="module")
def scoring_bundle(tmp_path_factory) -> dict:
    """A simulated cohort, its params.yaml and a models/ folder in one directory (as after `make run`)."""
    from tests.pipeline.test_predict import SMALL, build_bundle

    root = tmp_path_factory.mktemp("docs_scoring")
    config, cohort, models = build_bundle(root)
    (root / "params.yaml").write_text(json.dumps(SMALL))  # JSON is YAML
    return {"root": root, "config": config, "cohort": cohort, "models": models}


def _measurements_in_hours(cohort: Path) -> pd.DataFrame:
    """The first simulated patient's measurements as the example's reader has them: hours since infusion,
    analyte, value and unit as written, under the example's id P1."""
    measurements = pd.read_csv(cohort / "measurements.csv", dtype=str)
    patients = pd.read_csv(cohort / "patients.csv", dtype=str)
    first = patients.iloc[0]
    rows = measurements[measurements["patient_id"] == first["patient_id"]]
    hours = (pd.to_datetime(rows["time"]) - pd.Timestamp(first["anchor_time"])).dt.total_seconds() / 3600
    return rows.assign(patient_id="P1", time=hours.to_numpy())


def test_predict_python_example_runs_as_written(scoring_bundle: dict, monkeypatch: pytest.MonkeyPatch):
    [code] = [b for b in blocks(ROOT / "docs" / "predict.md", "python") if "score_patient" in b]
    monkeypatch.chdir(scoring_bundle["root"])  # Scorer("models") and the default params.yaml are here
    namespace = _execute(code, {"measurements": _measurements_in_hours(scoring_bundle["cohort"])})
    risk = namespace["risk"]
    assert set(risk.probability) == set(scoring_bundle["config"].targets)
    assert np.isfinite(risk.probability["crs_severe"]), risk.message
    assert 0 <= risk.probability["crs_severe"] <= 1
    assert risk.band["crs_severe"] in {"low", "intermediate", "high"}
    assert len(risk.drivers["crs_severe"]) > 0


def test_reports_python_example_runs_as_written(run: Run, tmp_path: Path):
    [code] = [b for b in blocks(ROOT / "docs" / "reports.md", "python") if "write_patient_reports" in b]
    from pipeline.reporting import compute_cohort_bands

    namespace = {
        "bundle": run.bundle, "landmarks": run.landmarks, "config": run.config, "out_dir": tmp_path / "pages",
        "measurements": run.measurements, "treatments": run.treatments, "messages": {}, "metrics": None,
        "bands": compute_cohort_bands(run.measurements, run.landmarks, ["IL6", "CRP"], "crs_severe"),
    }
    paths = _execute(code, namespace)["paths"]
    assert paths[0].name == "index.html" and len(paths) == run.landmarks["patient_id"].nunique() + 1
    assert all(p.stat().st_size > 1000 for p in paths)


def test_features_python_example_runs_as_written(run: Run):
    [code] = [b for b in blocks(ROOT / "docs" / "features.md", "python") if "LandmarkFeaturizer" in b]
    patients = pd.DataFrame({"patient_id": run.landmarks["patient_id"].astype(str).unique()})
    patients = patients.assign(age=60.0, product="axi-cel")
    events = pd.DataFrame({"patient_id": patients["patient_id"].iloc[:3], "hours_since_anchor": [30.0, 50.0, 70.0],
                           "event": "CRS", "grade": 3.0})
    namespace = _execute(code, {"measurements": run.measurements, "patients": patients, "events": events,
                                "treatments": run.treatments})
    X = namespace["X"]
    assert len(X) == len(patients) * 3 and {"il6__latest", "age", "label__crs_severe"} <= set(X.columns)
    assert X.loc[X["patient_id"].astype(str) == patients["patient_id"].iloc[0], "label__crs_severe"].notna().any()


def test_rest_example_body_is_answered(scoring_bundle: dict):
    [body] = [b for b in blocks(ROOT / "docs" / "predict.md", "json") if "dataframe_split" in b]
    request = json.loads(body)
    from pipeline.serving.pyfunc import CrsSevereRiskModel
    from pipeline.serving.registry import load_setup

    model = CrsSevereRiskModel()
    model.setup = load_setup(scoring_bundle["models"], scoring_bundle["config"])
    split = request["dataframe_split"]
    answer = model.predict(None, pd.DataFrame(split["data"], columns=split["columns"]), request.get("params"))
    assert set(answer["patient_id"]) == {"P1"} and set(answer["target"]) == {"crs_severe", "icans_severe"}
    assert answer["probability"].notna().all(), answer["message"].tolist()
