"""crs predict: same numbers as the scoring module, latest-landmark choice, no look-ahead, per-patient
messages instead of crashes or guesses, file-level errors without partial output, the Python API."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import contracts, featurize, predict, simulate
from pipeline.adapters.canonical import read_cohort
from pipeline.adapters.frames import combined_to_raw, raw_to_combined, read_new_cohort
from pipeline.config import Config, parse_config
from pipeline.errors import UserError
from pipeline.ingestion import ingest_tables
from pipeline.model import LandmarkModel, apply_feature_specs, build_feature_specs, fit_calibrator
from pipeline.model.artifacts import landmark_model_files, seal_models_dir
from pipeline.predict import Scorer, load_setup
from pipeline.scoring import PREDICTION_COLUMNS, score_cohort
from pipeline.training.booster import fit_booster, predict_booster

SMALL = {
    "static_features": ["age", "product"],
    "train": {"n_estimators": 30, "calibration": "isotonic"},
}


def build_bundle(root: Path, n_patients: int = 150, seed: int = 3, params: dict | None = None
                 ) -> tuple[Config, Path, Path]:
    """A simulated cohort and a small model bundle in the train output format (no MLflow, seconds).

    Boosters are fitted on all labelled rows and calibrated in-sample: enough to test scoring paths.
    """
    config = parse_config(SMALL if params is None else params)
    cohort = root / "cohort"
    simulate.main(config, out=cohort, n_patients=n_patients, seed=seed)
    result = ingest_tables(read_cohort(cohort))
    landmarks = featurize.run(config, result.tables)
    columns = contracts.feature_columns(landmarks.columns)
    specs = build_feature_specs(landmarks, columns)
    models = root / "models"
    for target in config.targets:
        rows = landmarks[landmarks[f"label__{target}"].notna()].reset_index(drop=True)
        y = rows[f"label__{target}"].to_numpy(dtype=int)
        X = apply_feature_specs(rows, specs)
        booster = fit_booster(X, y, config.train, specs, seed)
        calibrator = fit_calibrator(predict_booster(booster, X, 1), y, config.train.calibration)
        directory = models / target
        directory.mkdir(parents=True)
        files, entry = landmark_model_files(LandmarkModel([booster], calibrator, 0.2))
        for name, content in files.items():
            (directory / name).write_bytes(content)
        (directory / "features.json").write_text(json.dumps({"features": [s.to_json() for s in specs]}))
        metadata = {
            "target": target,
            "landmarks_hours": sorted(float(h) for h in rows["landmark_hours"].unique()),
            "models": {"all": entry},
            "analytes": list(landmarks.attrs["analytes"]),  # as crs train records them
            "covariate_reference": landmarks.attrs["covariate_reference"],
            "training_summary": landmarks.attrs["training_summary"],
        }
        (directory / "metadata.json").write_text(json.dumps(metadata))
    seal_models_dir(models)  # sha256 digests, as `crs train` writes them (loading checks them)
    return config, cohort, models


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, Path, Path]:
    return build_bundle(tmp_path_factory.mktemp("predict"))


def write_csv_cohort(directory: Path, tables: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in tables.items():
        (directory / f"{name}.csv").write_text(text.strip() + "\n")
    return directory


def _prob(preds: pd.DataFrame, patient: str, target: str = "crs_severe") -> float:
    row = preds[(preds["patient_id"] == patient) & (preds["target"] == target)]
    assert len(row) == 1
    return float(row["probability"].iloc[0])


def _message(preds: pd.DataFrame, patient: str, target: str = "crs_severe") -> str:
    return str(preds[(preds["patient_id"] == patient) & (preds["target"] == target)]["message"].iloc[0])


def test_same_numbers_as_the_scoring_module(bundle):
    config, cohort, models = bundle
    setup = load_setup(models, config)
    result = score_cohort(read_new_cohort(cohort), setup)
    # The reference: the stage's own landmark table scored by pipeline.scoring (pandas path).
    reference = featurize.run(config, ingest_tables(read_cohort(cohort)).tables)
    keys = result.landmarks[["patient_id", "landmark_hours"]].astype({"patient_id": "str"})
    reference = keys.merge(reference.astype({"patient_id": "str"}), on=["patient_id", "landmark_hours"], how="left")
    for target, model in setup.bundle.targets.items():
        expected = model.score(reference)
        got = result.scores[target]
        ok = ~np.isnan(got.probability)
        assert ok.sum() > 100
        assert np.array_equal(got.probability[ok], expected.probability[ok])  # bit-identical
        assert np.array_equal(got.shap[ok], expected.shap[ok])
        assert np.array_equal(got.base_value[ok], expected.base_value[ok])
    preds = result.predictions
    assert list(preds.columns) == PREDICTION_COLUMNS
    assert len(preds) == 2 * preds["patient_id"].nunique()
    scored = preds["probability"].notna()
    assert preds.loc[scored, "band"].isin(["low", "intermediate", "high"]).all()
    assert (preds.loc[~scored, "band"] == "").all() and (preds.loc[~scored, "message"] != "").all()


def test_latest_landmark_choice_and_no_look_ahead(bundle, tmp_path):
    config, _, models = bundle
    setup = load_setup(models, config)
    measurements = "patient_id,time,analyte,value,unit\n" + "\n".join(
        f"{p},{h},{a},{v},{u}"
        for p, hours in (("A", (-48, -2, 10, 30, 50)), ("B", (-30, -5)), ("C", (-24, 12, 25)))
        for h in hours
        for a, v, u in (("IL6", 5 + max(h, 0) * 2, "pg/mL"), ("CRP", 4 + max(h, 0) / 5, "mg/L"))
    )
    patients = "patient_id,age,product\nA,60,axi-cel\nB,55,tisa-cel\nC,70,axi-cel"
    cohort = write_csv_cohort(tmp_path / "c1", {"patients": patients, "measurements": measurements})
    preds = score_cohort(read_new_cohort(cohort), setup).predictions
    by_patient = preds.drop_duplicates("patient_id").set_index("patient_id")["landmark_hours"]
    assert by_patient.to_dict() == {"A": 48.0, "B": 0.0, "C": 24.0}

    # Rows after --at (new ones, and changed values) cannot move the risk at --at.
    at = 24.0
    before = score_cohort(read_new_cohort(cohort), setup, at).predictions
    later = measurements.replace("A,50,IL6,105,pg/mL", "A,50,IL6,99999,pg/mL") + "\nA,26,IL6,5000,pg/mL\nC,40,FERRITIN,9000,ng/mL"
    assert later != measurements
    cohort2 = write_csv_cohort(tmp_path / "c2", {"patients": patients, "measurements": later})
    after = score_cohort(read_new_cohort(cohort2), setup, at).predictions
    pd.testing.assert_frame_equal(before, after)
    assert (before["landmark_hours"] == at).all()


def test_unusable_data_gives_messages_not_scores(bundle, tmp_path):
    config, _, models = bundle
    setup = load_setup(models, config)
    cohort = write_csv_cohort(tmp_path / "c", {
        "patients": "patient_id,age,product\nOK,60,axi-cel\nNODATA,50,axi-cel\nBADONLY,40,axi-cel\n"
                    "LATE,45,axi-cel\nOTHERONLY,61,axi-cel\nPART,62,tisa-cel",
        "measurements": "patient_id,time,analyte,value,unit\n"
                        "OK,-10,IL6,4,pg/mL\nOK,20,IL-6,80,pg/mL\nOK,20,CRP,3,mg/dL\nOK,21,IL6,-5,pg/mL\n"
                        "BADONLY,-10,IL6,-1,pg/mL\nBADONLY,5,CRP,12,furlongs\n"
                        "LATE,40,IL6,100,pg/mL\n"
                        "OTHERONLY,10,ALB,35,g/L\n"
                        "PART,-5,CRP,5,mg/L\nPART,10,CRP,50,mg/L\n"
                        "GHOST,5,IL6,10,pg/mL",
        "events": "patient_id,event,grade,time\nOK,CRS,1,15",
    })
    result = score_cohort(read_new_cohort(cohort), setup, 24.0)
    preds = result.predictions
    assert set(preds["patient_id"]) == {"OK", "NODATA", "BADONLY", "LATE", "OTHERONLY", "PART", "GHOST"}
    assert not math.isnan(_prob(preds, "OK"))
    assert "IL6 out of plausible range x1" in _message(preds, "OK")  # the -5 row, quarantined
    for patient, words in (
        ("NODATA", "no usable measurements"),
        ("BADONLY", "no usable measurements"),
        ("LATE", "no measurement at or before 24 h"),
        ("OTHERONLY", "none of the markers the model relies on"),
        ("GHOST", "patient not in the patients table"),
    ):
        for target in ("crs_severe", "icans_severe"):
            assert math.isnan(_prob(preds, patient, target)), patient
            assert words in _message(preds, patient, target), (patient, _message(preds, patient, target))
    assert "unit not convertible" in _message(preds, "BADONLY")
    # Scored without some key markers: a score and the list of what was missing.
    assert not math.isnan(_prob(preds, "PART"))
    part = _message(preds, "PART")  # only CRP measured: every other marker of the model is named as missing
    missing = part.split("no ", 1)[1].split(" at or before")[0].split(", ")
    assert {"IL6", "IFNG"} <= set(missing) and "CRP" not in missing and "scored without them" in part
    assert set(result.messages) >= {"NODATA", "LATE", "PART"}


def test_missing_anchor_and_event_before_landmark(bundle, tmp_path):
    config, _, models = bundle
    setup = load_setup(models, config)
    cohort = write_csv_cohort(tmp_path / "c", {
        "patients": "patient_id,anchor_time,age,product\nA,2024-01-10T08:00:00,60,axi-cel\nNOANCHOR,,50,axi-cel",
        "measurements": "patient_id,time,analyte,value,unit\n"
                        "A,2024-01-09T08:00:00,IL6,5,pg/mL\nA,2024-01-11T08:00:00,IL6,500,pg/mL\n"
                        "NOANCHOR,2024-01-09T08:00:00,IL6,5,pg/mL",
        "events": "patient_id,event,grade,time\nA,CRS,3,2024-01-10T20:00:00",
    })
    preds = score_cohort(read_new_cohort(cohort), setup).predictions
    assert _prob(preds, "A", "crs_severe") != _prob(preds, "A", "crs_severe")  # NaN: already had the event
    assert "CRS grade >= 3 already recorded at 12.0 h" in _message(preds, "A", "crs_severe")
    assert not math.isnan(_prob(preds, "A", "icans_severe"))
    assert "no anchor_time" in _message(preds, "NOANCHOR")
    assert math.isnan(_prob(preds, "NOANCHOR"))


def test_file_level_errors_leave_no_output(bundle, tmp_path):
    config, cohort, models = bundle
    out = tmp_path / "out"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="measurements"):
        predict.main(config, write_csv_cohort(empty, {"patients": "patient_id\nA"}), models, out, reports=False)
    assert not out.exists()
    with pytest.raises(UserError, match="models directory not found"):
        predict.main(config, cohort, tmp_path / "nomodels", out, reports=False)
    with pytest.raises(UserError, match="outside the landmarks"):
        predict.main(config, cohort, models, out, at_hours=500.0, reports=False)
    assert not out.exists()
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="not a crs predict output"):
        predict.main(config, cohort, models, tmp_path / "precious", reports=False)
    assert (tmp_path / "precious" / "notes.txt").exists()
    # Params whose featurize output lacks model features: one clear error.
    other = parse_config({"static_features": []})
    with pytest.raises(UserError, match="features that featurize does not produce"):
        predict.main(other, cohort, models, out, reports=False)
    assert not out.exists()


def test_main_writes_predictions_quarantine_and_counts(bundle, tmp_path):
    config, cohort, models = bundle
    out = tmp_path / "out"
    result = predict.main(config, cohort, models, out, reports=False)
    assert {p.name for p in out.iterdir()} == {"predictions.csv", "quarantine.csv", "ingest.json", predict.OUTPUT_MARKER}
    assert json.loads((out / predict.OUTPUT_MARKER).read_text())["tool"] == "crs predict"  # marks it replaceable
    written = pd.read_csv(out / "predictions.csv", dtype={"patient_id": str}, keep_default_na=False,
                          na_values={"probability": [""]})
    assert list(written.columns) == PREDICTION_COLUMNS
    assert np.allclose(written["probability"], result.predictions["probability"], rtol=0, atol=1e-12, equal_nan=True)
    counts = json.loads((out / "ingest.json").read_text())
    assert counts["rows_read"] == counts["rows_accepted"] + counts["rows_quarantined"] + counts["duplicates_dropped"]
    predict.main(config, cohort, models, out, at_hours=24.0, reports=False)  # a previous output is replaced
    again = pd.read_csv(out / "predictions.csv")
    assert (again["landmark_hours"].dropna() == 24.0).all() and again["landmark_hours"].notna().sum() > 250


def test_combined_format_round_trip(bundle):
    config, cohort, models = bundle
    setup = load_setup(models, config)
    raw = read_new_cohort(cohort)
    ids = ["P00001", "P00002", "P00003", "P00004", "P00005"]
    combined = raw_to_combined(raw, ids)
    assert combined["patient_id"].nunique() == 5
    via_combined = score_cohort(combined_to_raw(combined), setup).predictions
    direct = score_cohort(raw, setup).predictions
    direct = direct[direct["patient_id"].isin(ids)].reset_index(drop=True)
    pd.testing.assert_frame_equal(via_combined.reset_index(drop=True), direct)
    # Numbers instead of text give the same result (a REST client may send either).
    numeric = combined.copy()
    numeric["age"] = pd.to_numeric(numeric["age"])
    again = score_cohort(combined_to_raw(numeric), setup).predictions
    assert np.allclose(again["probability"], via_combined["probability"], equal_nan=True, rtol=0, atol=0)
    # Rows of one patient that disagree on a covariate: quarantined patient, message, no guess.
    clash = combined.copy()
    first = clash.index[clash["patient_id"] == "P00001"][0]
    clash.loc[first, "age"] = "19"
    preds = score_cohort(combined_to_raw(clash), setup).predictions
    assert math.isnan(_prob(preds, "P00001")) and "patient row rejected" in _message(preds, "P00001")


def test_python_api_one_patient(bundle):
    config, cohort, models = bundle
    scorer = Scorer(models, config)
    measurements = pd.read_csv(cohort / "measurements.csv", dtype=str)
    patients = pd.read_csv(cohort / "patients.csv", dtype=str)
    pid = "P00007"
    risk = scorer.score_patient(measurements[measurements["patient_id"] == pid].drop(columns="patient_id"),
                                patients[patients["patient_id"] == pid].iloc[0])
    preds = score_cohort(read_new_cohort(cohort), scorer.setup).predictions
    assert any(math.isfinite(p) for p in risk.probability.values())  # not vacuous: something is scored
    for target in config.targets:
        expected = _prob(preds, pid, target)
        assert risk.probability[target] == pytest.approx(expected, rel=0, abs=1e-12) or (
            math.isnan(expected) and math.isnan(risk.probability[target])
        )
        drivers = risk.drivers[target]
        if not math.isnan(risk.probability[target]):
            assert len(drivers) == config.report.top_drivers
            assert np.all(np.diff(np.abs(drivers["shap"].to_numpy())) <= 0)
            assert set(drivers["direction"]) <= {"pushes the estimate up", "pushes the estimate down"}
    assert risk.landmark_hours in config.landmarks_hours
    # Numbers in, hours instead of timestamps: the ingest rules still apply (IL-6 synonym, mg/dL -> mg/L).
    simple = pd.DataFrame({"hours_since_anchor": [-20.0, 22.0, 22.0], "analyte": ["IL6", "IL-6", "CRP"],
                           "value": [4.0, 90.0, 3.0], "unit": ["pg/mL", "pg/mL", "mg/dL"]})
    risk2 = scorer.score_patient(simple, {"patient_id": "X", "age": 61, "product": "axi-cel"})
    # Latest measurement at 22 h: the largest configured landmark at or before it is 0 h.
    assert risk2.landmark_hours == 0.0
    assert all(0 < p < 1 for p in risk2.probability.values())
    assert "IFNG" in risk2.message  # key markers not measured are named


def test_main_with_pages(bundle, tmp_path):
    config, _, models = bundle
    cohort = write_csv_cohort(tmp_path / "c", {
        "patients": "patient_id,age,product\nOK,60,axi-cel\nNODATA,50,axi-cel\nPART,62,tisa-cel",
        "measurements": "patient_id,time,analyte,value,unit\n"
                        "OK,-10,IL6,4,pg/mL\nOK,20,IL-6,80,pg/mL\nOK,20,CRP,3,mg/dL\nOK,21,IL6,-5,pg/mL\n"
                        "PART,-5,CRP,5,mg/L\nPART,10,CRP,50,mg/L",
    })
    out = tmp_path / "out"
    predict.main(config, cohort, models, out)
    pages = {p.name for p in (out / "patients").iterdir()}
    assert {"index.html", "OK.html", "PART.html", "NODATA.html"} <= pages
    # The unscoreable patient has a page that says why, with no risk number, and is in the index.
    nodata = (out / "patients" / "NODATA.html").read_text()
    assert "Not scored" in nodata and "no usable measurements" in nodata and 'id="trajectory"' not in nodata
    assert "NODATA.html" in (out / "patients" / "index.html").read_text()
    assert "out of plausible range" in (out / "patients" / "OK.html").read_text()
    assert "scored without them" in (out / "patients" / "PART.html").read_text()
    preds = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    assert "no usable measurements" in preds.loc[preds["patient_id"] == "NODATA", "message"].iloc[0]
