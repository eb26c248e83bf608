"""Issue 12, hostile values: infinite and overflowing numbers, stray words in numeric covariates, cell
values leaking into the committed ingest report, and files where one reason quarantines many rows."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import cohort, ingest, predict
from pipeline.adapters.frames import combined_to_raw, raw_to_combined, read_new_cohort
from pipeline.config import Config, IngestConfig
from pipeline.ingestion import ingest_tables
from pipeline.predict import load_setup
from pipeline.scoring import score_cohort
from tests.pipeline.test_ingest import in_memory
from tests.pipeline.test_predict import build_bundle

MEASUREMENT_COLUMNS = ["patient_id", "time", "analyte", "value", "unit"]


def _reasons(result, table: str) -> dict[int, str]:
    q = result.quarantine[result.quarantine["source_file"] == f"{table}.csv"]
    return dict(zip(q["source_line"].astype(int), q["reason"], strict=True))


def _cohort(patients: list[tuple], patient_columns: list[str], measurements: list[tuple], **more) -> dict:
    raw = {
        "patients": in_memory(cohort.PATIENTS, patient_columns, patients),
        "measurements": in_memory(cohort.MEASUREMENTS, MEASUREMENT_COLUMNS, measurements),
        "events": in_memory(cohort.EVENTS, ["patient_id", "event", "grade", "time"], [("A", "CRS", "1", "3")]),
    }
    for name, (columns, rows) in more.items():
        raw[name] = in_memory(getattr(cohort, name.upper()), columns, rows)
    return raw


def test_infinite_and_overflowing_covariates_are_blanked_not_the_patient():
    ages = ["61", "inf", "1e400", "-Infinity", "1e39", "3e38", "-0", "70", "71", "72", "73", "74"]
    patients = [(f"P{i}", age) for i, age in enumerate(ages)] + [("A", "50")]
    result = ingest_tables(_cohort(patients, ["patient_id", "age"], [("A", "1", "CRP", "3", "mg/L")]))
    accepted = result.tables["patients"].set_index("patient_id")["age"]
    assert accepted.dtype == "float64" and len(accepted) == 13  # every patient kept, the column numeric
    assert accepted[["P1", "P2", "P3", "P4"]].isna().all()
    assert accepted["P5"] == 3e38 and accepted["P6"] == 0.0
    cells = result.quarantine[result.quarantine["source_column"].notna()]
    assert cells[["source_line", "source_column", "reason"]].values.tolist() == [
        [line, "age", "non_finite_value"] for line in (3, 4, 5, 6)
    ]
    report = result.report
    assert report["cells_quarantined_by_reason"] == {"non_finite_value": 4}
    assert report["rows_quarantined"] == 0
    assert np.isfinite(accepted.dropna().to_numpy(dtype=np.float32)).all()  # XGBoost reads float32


def test_infinite_and_overflowing_values_doses_and_times_are_quarantined():
    measurements = [
        ("A", "1", "CRP", "3", "mg/L"),            # line 2: accepted
        ("A", "2", "CRP", "inf", "mg/L"),          # line 3
        ("A", "3", "CRP", "1e400", "mg/L"),        # line 4
        ("A", "4", "CRP", "<1e400", "mg/L"),       # line 5
        ("A", "5", "Troponin I", "1e39", "ng/mL"),  # line 6: unknown analyte, no plausible range to catch it
        ("A", "6", "Troponin I", "-Infinity", "ng/mL"),  # line 7
        ("A", "1e39", "CRP", "3", "mg/L"),         # line 8: a time beyond float32
        ("A", "8", "Troponin I", "2", "ng/mL"),    # line 9: accepted
    ]
    treatments = (["patient_id", "time", "drug", "dose", "unit"],
                  [("A", "1", "tocilizumab", "inf", "mg"), ("A", "2", "tocilizumab", "1e400", "mg"),
                   ("A", "3", "dexamethasone", "10", "mg")])
    result = ingest_tables(_cohort([("A", "50")], ["patient_id", "age"], measurements, treatments=treatments))
    assert _reasons(result, "measurements") == {3: "non_finite_value", 4: "non_finite_value", 5: "non_finite_value",
                                                6: "non_finite_value", 7: "non_finite_value", 8: "bad_time"}
    assert _reasons(result, "treatments") == {2: "non_finite_value", 3: "non_finite_value"}
    m = result.tables["measurements"]
    assert m["value"].tolist() == [3.0, 2.0] and np.isfinite(m["hours_since_anchor"]).all()
    assert result.tables["treatments"]["dose"].tolist() == [10.0]


def test_one_word_in_a_numeric_covariate_keeps_it_numeric_and_reports_the_patient():
    patients = [(f"P{i}", str(40 + i), "axi-cel") for i in range(9)] + [("P9", "unknown", "axi-cel"), ("A", "50", "x")]
    result = ingest_tables(_cohort(patients, ["patient_id", "age", "product"], [("A", "1", "CRP", "3", "mg/L")]))
    assert result.report["covariate_types"] == {"age": "numeric", "product": "text"}
    ages = result.tables["patients"].set_index("patient_id")["age"]
    assert ages.dtype == "float64" and math.isnan(ages["P9"]) and ages["P8"] == 48.0
    cell = result.quarantine[result.quarantine["source_column"].notna()].iloc[0]
    assert (cell["patient_id"], cell["source_file"], cell["source_line"], cell["source_column"], cell["reason"]) == (
        "P9", "patients.csv", 11, "age", "unparseable_value")
    # "No result" tokens are missing values, not words that turn the column into text.
    patients = [(f"P{i}", "NA" if i % 3 == 0 else str(40 + i)) for i in range(9)] + [("A", "50")]
    result = ingest_tables(_cohort(patients, ["patient_id", "age"], [("A", "1", "CRP", "3", "mg/L")]))
    assert result.report["covariate_types"] == {"age": "numeric"} and result.report["cells_quarantined"] == 0


def test_ingest_json_quotes_no_cell_value():
    secrets = ["Jane Quincy Doe", "1961-03-14", "Troponin Zeta-7731", "MRN 0048213", "Ward 7 East"]
    patients = [(f"P{i}", str(40 + i), "Jane Quincy Doe" if i == 4 else "Someone Else", "1961-03-14",
                 "MRN 0048213" if i == 2 else str(70 + i)) for i in range(12)]
    measurements = [("P1", "1", "CRP", "3", "mg/L"), ("P1", "2", "Troponin Zeta-7731", "0.4", "ng/mL"),
                    ("P2", "2", "Ward 7 East", "1", "x"), ("P3", "2", "CRP", "1", "Ward 7 East")]
    raw = _cohort(patients, ["patient_id", "age", "name", "date_of_birth", "weight"], measurements)
    result = ingest.run(Config(), raw)
    text = json.dumps(result.report)
    for secret in secrets:
        assert secret not in text, secret
    assert result.report["unknown_analytes"] == {"n_names": 2, "n_rows": 2}
    assert result.report["cells_quarantined"] == 1  # the MRN in the weight column
    assert any("column 'weight'" in w for w in result.report["warnings"])
    # The values are still where a data manager looks: the quarantine file (data/interim, not git).
    assert result.quarantine.astype(str).isin(["MRN 0048213", "Ward 7 East"]).any().any()


def test_warning_when_one_reason_quarantines_a_large_share_of_a_file():
    measurements = [("A", str(h), "CRP", f"{h},5" if h < 4 else "3", "mg/L") for h in range(10)]  # decimal commas
    raw = _cohort([("A", "50")], ["patient_id", "age"], measurements)
    result = ingest.run(Config(), raw)
    (warning,) = result.report["warnings"]
    assert warning == ("measurements.csv: 40% of rows quarantined as unparseable_value; "
                       "check the delimiter/decimal settings (cohort.csv)")
    assert ingest.run(Config(ingest=IngestConfig(quarantine_warning_share=0.5)), raw).report["warnings"] == []
    assert ingest_tables(raw, quarantine_warning_share=0.4).report["warnings"] == []  # "more than" the share


# ----------------------------------------------------------------------------------------------
# crs predict, the MLflow model's combined input and the pages: one bad age harms nobody else.
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory):
    return build_bundle(tmp_path_factory.mktemp("values"))


BAD_AGES = {"P00001": "inf", "P00002": "1e400", "P00003": "unknown"}


def _small_cohort(source: Path, target: Path, ages: dict[str, str]) -> Path:
    patients = pd.read_csv(source / "patients.csv", dtype=str, keep_default_na=False).head(12)
    for pid, age in ages.items():
        patients.loc[patients["patient_id"] == pid, "age"] = age
    measurements = pd.read_csv(source / "measurements.csv", dtype=str, keep_default_na=False)
    target.mkdir(parents=True)
    patients.to_csv(target / "patients.csv", index=False)
    measurements[measurements["patient_id"].isin(patients["patient_id"])].to_csv(target / "measurements.csv", index=False)
    return target


def test_predict_scores_everyone_despite_bad_ages(bundle, tmp_path):
    config, source, models = bundle
    setup = load_setup(models, config)
    clean = score_cohort(read_new_cohort(_small_cohort(source, tmp_path / "clean", {})), setup).predictions
    dirty = score_cohort(read_new_cohort(_small_cohort(source, tmp_path / "dirty", BAD_AGES)), setup).predictions
    others = ~dirty["patient_id"].isin(BAD_AGES)
    assert clean["probability"].notna().sum() > 12  # not vacuous
    assert np.array_equal(dirty.loc[others, "probability"].to_numpy(), clean.loc[others, "probability"].to_numpy(),
                          equal_nan=True)
    for pid, age in BAD_AGES.items():
        rows = dirty[dirty["patient_id"] == pid]
        assert rows["probability"].notna().all()  # scored, with age as not measured
        reason = "value not a number" if age == "unknown" else "value infinite or too large"
        assert (rows["message"].str.contains(f"age ({reason})", regex=False)).all(), rows["message"].tolist()
        assert "patient row rejected" not in rows["message"].iloc[0]


def test_mlflow_combined_input_with_infinite_age(bundle):
    config, source, models = bundle
    setup = load_setup(models, config)
    ids = ["P00001", "P00002", "P00004", "P00005"]
    combined = raw_to_combined(read_new_cohort(source), ids)
    combined["age"] = pd.to_numeric(combined["age"]).astype("float64")
    expected = score_cohort(combined_to_raw(combined), setup).predictions
    combined.loc[combined["patient_id"] == "P00001", "age"] = np.inf  # a REST client sends a float inf
    combined.loc[combined["patient_id"] == "P00002", "age"] = np.finfo(np.float64).max
    got = score_cohort(combined_to_raw(combined), setup).predictions
    others = got["patient_id"].isin(["P00004", "P00005"])
    assert np.array_equal(got.loc[others, "probability"], expected.loc[others, "probability"], equal_nan=True)
    assert got.loc[~others, "probability"].notna().all()


def test_predict_pages_render_with_a_word_in_the_age_column(bundle, tmp_path):
    config, source, models = bundle
    cohort_dir = _small_cohort(source, tmp_path / "dirty", BAD_AGES)
    result = predict.main(config, cohort_dir, models, tmp_path / "out", reports=True)
    assert result.ingest.tables["patients"]["age"].dtype == "float64"
    assert len(list((tmp_path / "out" / "patients").glob("*.html"))) >= 10
    written = json.loads((tmp_path / "out" / "ingest.json").read_text())
    assert written["cells_quarantined"] == 3 and "unknown" not in json.dumps(written["warnings"])
