"""crs report: clinical wording, cohort bands, patient pages, index, model card, pseudonymisation, atomicity,
the pure stage ``run`` and ``main`` on paths under a temporary folder."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import report, reporting
from pipeline.errors import UserError
from pipeline.explanation import explain_landmarks
from pipeline.io import write_parquet
from pipeline.reporting import clinical_text as ct
from pipeline.reporting import model_card, sections
from tests.pipeline.test_explain import Run, trained_run


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    return trained_run(tmp_path_factory)


def write_pages(run: Run, out: Path, **kwargs) -> list[Path]:
    explanations = explain_landmarks(run.bundle, run.landmarks, run.config)
    bands = reporting.compute_cohort_bands(run.measurements, run.landmarks, ["IL6", "CRP"], "crs_severe")
    metrics = json.loads(run.config.paths.metrics.read_text())
    return reporting.write_patient_reports(
        out, config=run.config, bundle=run.bundle, explanations=explanations, landmarks=run.landmarks,
        measurements=run.measurements, treatments=run.treatments, cohort_bands=bands, metrics=metrics, **kwargs,
    )


# --------------------------------------------------------------------------- clinical wording


UNITS = {"IL6": "pg/mL", "PLT": "10^9/L"}


def test_wording_fold_change_baseline_and_rising_slope():
    row = {"landmark_hours": 48.0, "il6__latest": 74.0, "il6__baseline": 6.1, "il6__fold_change": 74 / 6.1,
           "il6__slope_24h": math.log2(3) / 24}
    text = ct.describe_group("IL6", row, UNITS)
    assert text == "IL-6 74 pg/mL, 12x baseline (6.1 pg/mL), rising 3x per day"
    assert ct.driver_sentence(text, 0.4) == text + ": pushes the estimate up"
    assert ct.driver_sentence(text, -0.4).endswith(": pushes the estimate down")


def test_wording_falling_stable_and_48h_fallback():
    row = {"il6__latest": 20.0, "il6__baseline": 10.0, "il6__fold_change": 2.0, "il6__slope_24h": -1 / 24}
    assert ct.describe_analyte("IL6", row, "pg/mL").endswith("falling 50% per day")
    row.update({"il6__slope_24h": np.nan, "il6__slope_48h": 0.001})
    assert ct.describe_analyte("IL6", row, "pg/mL").endswith("stable")
    row["il6__slope_48h"] = math.log2(1.4) / 24
    assert ct.describe_analyte("IL6", row, "pg/mL").endswith("rising 40% per day")


def test_wording_censored_missing_baseline_and_not_measured():
    row = {"landmark_hours": 24.0, "il6__latest": 1.5, "il6__baseline": np.nan, "il6__fold_change": np.nan,
           "il6__n_below_limit": 2.0, "il6__n_above_limit": 0.0}
    text = ct.describe_group("IL6", row, UNITS, censoring="left")
    assert text == "IL-6 <1.5 pg/mL (below assay limit), no pre-infusion baseline"
    # earlier censored results are mentioned when the latest one is not censored
    row["il6__latest"] = 8.0
    assert "2 results below the assay limit" in ct.describe_group("IL6", row, UNITS, censoring="none")
    assert "above the assay limit" not in ct.describe_group("IL6", row, UNITS, censoring="none")
    # A baseline taken after infusion (no pre-infusion value) is named as such.
    row.update({"il6__baseline": 4.0, "il6__fold_change": 2.0, "il6__baseline_after_anchor": 1.0})
    assert "2x first value after infusion (4 pg/mL)" in ct.describe_group("IL6", row, UNITS, censoring="none")
    assert ct.describe_group("IL6", {"landmark_hours": 48.0, "il6__latest": np.nan}, UNITS) == (
        "IL-6 not measured before 48 h")


def test_wording_units_scores_treatments_covariates():
    row = {"landmark_hours": 72.0, "plt__latest": 65.0, "plt__baseline": 89.0, "plt__fold_change": 65 / 89,
           "temp__max": 39.24, "fever__hours_since_first": 30.0, "tocilizumab__given": 1.0,
           "tocilizumab__hours_since": 6.0, "steroids__given": 0.0, "car_hematotox__baseline": 3.0,
           "product": "axi-cel", "age": 63.0, "tumor_burden_std": 0.94}
    assert ct.describe_group("PLT", row, UNITS).startswith("Platelets 65 ×10⁹/L, 0.73x baseline (89 ×10⁹/L)")
    assert ct.describe_group("FEVER", row, UNITS) == (
        "Highest temperature since infusion 39.2 °C, fever (>= 38.0 °C) for 30 h")
    assert ct.describe_group("TOCILIZUMAB", row, UNITS) == "Tocilizumab given, last dose 6 h ago"
    assert ct.describe_group("STEROIDS", row, UNITS) == "Corticosteroids not given yet"
    assert ct.describe_group("CAR_HEMATOTOX", row, UNITS).startswith("CAR-HEMATOTOX 3 points at baseline (high")
    assert ct.describe_group("product", row, UNITS) == "CAR-T product: axi-cel"
    assert ct.describe_group("age", row, UNITS) == "Age 63 years"
    assert ct.describe_group("tumor_burden_std", row, UNITS) == "Tumour burden +0.9 SD from the training cohort mean (same disease and unit)"
    assert ct.describe_group("LANDMARK", row, UNITS) == "Time since infusion 72 h"


def test_feature_groups():
    assert ct.feature_group("il6__fold_change") == "IL6"
    assert ct.feature_group("m_easix__latest") == "M_EASIX"
    assert ct.feature_group("temp__max") == ct.feature_group("fever__hours_since_first") == "FEVER"
    assert ct.feature_group("age") == "age"
    assert ct.feature_group("landmark_hours") == "LANDMARK"


# --------------------------------------------------------------------------- cohort bands


def test_cohort_bands_quartiles_per_group():
    rows, lms = [], []
    for i in range(24):
        pid = f"Q{i:02d}"
        event = i < 12
        lms.append({"patient_id": pid, "landmark_hours": 0.0, "onset_hours__crs_severe": 50.0 if event else np.nan})
        # one value per patient in the 24-36 h bin: event patients 100 + i, others i
        rows.append({"patient_id": pid, "hours_since_anchor": 30.0, "analyte": "IL6",
                     "value": float(100 + i if event else i), "unit": "pg/mL"})
    bands = reporting.compute_cohort_bands(pd.DataFrame(rows), pd.DataFrame(lms), ["IL6"], "crs_severe")
    assert list(bands.columns) == reporting.BAND_COLUMNS
    at = bands[bands["bin_start_hours"] == 24.0].set_index("group")
    assert at.loc["event", "p50"] == pytest.approx(np.median(np.arange(100, 112)))
    assert at.loc["no_event", "p25"] == pytest.approx(np.percentile(np.arange(12, 24), 25))
    assert at.loc["event", "n_patients"] == 12
    # the 36 h window pools neighbouring bins; nothing beyond it
    assert set(bands["bin_start_hours"]) == {12.0, 24.0, 36.0}


# --------------------------------------------------------------------------- pages


def test_pages_contain_risk_drivers_charts_disclaimer_identity(run: Run, tmp_path: Path):
    messages = {"P0003": ["No IL-6 measured before 48 h."]}
    paths = write_pages(run, tmp_path / "patients", messages=messages)
    assert paths[0].name == "index.html"
    n_patients = run.landmarks["patient_id"].nunique()
    assert len(paths) == n_patients + 1 and all(p.exists() for p in paths)
    page = (tmp_path / "patients" / "P0003.html").read_text()
    assert 'id="risk"' in page and "grade ≥3 CRS" in page and "grade ≥3 ICANS" in page
    assert re.search(r'class="p"[^>]*>(&lt;1|\d+)%<', page)  # a calibrated risk in percent
    assert re.search(r">(low|intermediate|high)</span>", page)
    assert 'id="drivers-crs_severe"' in page and ("pushes the estimate up" in page or "pushes the estimate down" in page)
    assert "IL-6" in page
    assert page.count("<svg") >= 1 + 2 + 2  # trajectory, two waterfalls, two markers
    # Log-odds only inside the collapsed model details, never in what a clinician reads first (issue 13).
    outside_details = re.sub(r"<details.*?</details>", "", page, flags=re.S)
    assert "log-odds" in page and "log-odds" not in outside_details
    assert 'id="alert-crs_severe"' in page and "validated alert threshold" in page
    assert "Decision support, not a diagnosis." in page
    # The model is named by its files' digest, never by an MLflow run id (new on every run: pages and
    # dvc.lock would change on every unchanged rerun).
    sealed = json.loads((run.bundle.directory / "manifest.json").read_text())["metadata_sha256"]
    assert sealed["crs_severe"][:12] in page and run.bundle.runs["targets"]["crs_severe"] not in page
    assert "AUROC" in page and "calibration slope" in page
    assert "No IL-6 measured before 48 h." in page and 'role="alert"' in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")  # no network resources
    assert "https://" not in page and "<script" not in page
    index = paths[0].read_text()
    assert "No IL-6 measured before 48 h." in index


def test_index_sorted_by_current_risk(run: Run, tmp_path: Path):
    write_pages(run, tmp_path / "patients")
    frames = explain_landmarks(run.bundle, run.landmarks, run.config)
    latest = run.landmarks["landmark_hours"].max()
    current = pd.concat([f[f["landmark_hours"] == latest].set_index("patient_id")["probability"]
                         for f in frames.values()], axis=1).max(axis=1)
    index = (tmp_path / "patients" / "index.html").read_text()
    order = re.findall(r'<a href="([^"]+)\.html">', index)
    assert len(order) == len(current)
    assert np.all(np.diff(current.loc[order].to_numpy()) <= 1e-12)


TEST_KEY = "3f9a0c5e7b21d4468e0f9a3c5b7d2e1f4a6c8e0b2d4f6a8c1e3b5d7f9a0c2e4b"
OTHER_KEY = "c1e3b5d7f9a0c2e4b3f9a0c5e7b21d4468e0f9a3c5b7d2e1f4a6c8e0b2d4f6a8"


def test_pseudonymisation_removes_every_raw_id(run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(reporting.KEY_FILE_ENV, raising=False)
    monkeypatch.setenv(reporting.KEY_ENV, TEST_KEY)
    ids = run.landmarks["patient_id"].astype(str).unique()
    messages = {ids[0]: [f"Patient {ids[0]}: no IL-6 measured before 48 h."]}
    out = tmp_path / "patients"
    write_pages(run, out, messages=messages, pseudonymise=True)
    pattern = re.compile("|".join(re.escape(i) for i in ids))
    for path in out.iterdir():
        assert not pattern.search(path.name), path.name
        assert not pattern.search(path.read_text()), path.name
    alias = reporting.pseudonym(ids[0], bytes.fromhex(TEST_KEY))
    assert (out / f"{alias}.html").exists()
    assert f"Patient {alias}: no IL-6" in (out / f"{alias}.html").read_text()
    assert reporting.pseudonym(ids[0], bytes.fromhex(OTHER_KEY)) != alias


def test_pseudonymisation_without_key_is_a_user_error(run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for name in (reporting.KEY_ENV, reporting.KEY_FILE_ENV, reporting.LEGACY_SALT_ENV):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(UserError, match="crs keygen"):
        write_pages(run, tmp_path / "patients", pseudonymise=True)
    assert not (tmp_path / "patients").exists()


def test_writes_are_atomic(run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    out = tmp_path / "patients"
    out.mkdir()
    (out / "old.html").write_text("previous run")
    calls = {"n": 0}
    original = sections.svg_marker

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 5:
            raise RuntimeError("disk full")
        return original(*args, **kwargs)

    monkeypatch.setattr(sections, "svg_marker", failing)
    with pytest.raises(RuntimeError):
        write_pages(run, out)
    assert [p.name for p in tmp_path.iterdir()] == ["patients"]  # no temporary directory left
    assert [p.name for p in out.iterdir()] == ["old.html"]  # previous output untouched


def test_model_card_tripod_items(run: Run, tmp_path: Path):
    metrics = json.loads(run.config.paths.metrics.read_text())
    oof = pd.read_parquet(run.config.paths.oof)
    ids = run.landmarks["patient_id"].astype(str).unique()
    patients = pd.DataFrame({"patient_id": ids, "site": ["A" if i % 3 else "B" for i in range(len(ids))]})
    figures = reporting.read_figures(run.config.paths.figures_dir, ["crs_severe"])
    path = reporting.write_model_card(
        tmp_path / "model_card.html", config=run.config, bundle=run.bundle, metrics=metrics,
        landmarks=run.landmarks, patients=patients, oof=oof, figures=figures,
    )
    card = path.read_text()
    for heading in ("Outcome definition and time horizon", "Data splitting", "Missing data",
                    "Participants, events and class imbalance", "Discrimination and calibration",
                    "Clinical utility", "Comparison with published scores", "Variation across sites",
                    "How the deployed model treats missing", "Limitations"):
        assert heading in card, heading
    auroc = metrics["crs_severe"]["all"]["model"]["auroc"]
    assert f"{auroc:.2f}" in card
    assert "data:image/png;base64," in card
    assert "patient level" in card and "within 720 h" in card
    assert "easix" in card
    assert re.search(r"<td>B</td>.*?</tr>", card, re.S)
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", card)  # base64 can spell anything
    assert not re.search("|".join(ids), text)  # no patient ids in the model card


def test_training_cohort_pages_show_out_of_fold_risk_not_in_sample():
    """The deployed model's own score for a training patient is in-sample; pages show the
    out-of-fold risk (mean over CV repeats) and nothing where the patient was not at risk."""
    from pipeline.config import Config
    from pipeline.reporting import out_of_fold_risks

    frame = pd.DataFrame({"patient_id": ["A", "A", "B"], "landmark_hours": [0.0, 24.0, 0.0],
                          "probability": [0.99, 0.99, 0.01], "band": ["high", "high", "low"]})
    oof = pd.DataFrame({"patient_id": ["A", "A", "B", "B"], "landmark_hours": [0.0, 0.0, 0.0, 0.0],
                        "target": ["t", "t", "t", "other"], "repeat": [0, 1, 0, 0],
                        "prob__model": [0.2, 0.3, 0.05, 0.9]})
    out = out_of_fold_risks({"t": frame}, oof, Config())["t"]
    np.testing.assert_allclose(out["probability"].to_numpy(), [0.25, np.nan, 0.05])
    assert out["band"].tolist() == ["intermediate", "", "low"]


def test_page_file_names_stay_inside_the_output_folder():
    assert reporting.page_filename("P0001") == "P0001.html"
    assert reporting.page_filename("PS-0123ABCD") == "PS-0123ABCD.html"
    for pid in ("../../etc/passwd", "a/b", ".hidden", "x y", ""):
        name = reporting.page_filename(pid)
        assert "/" not in name and not name.startswith(".") and name.endswith(".html"), name
    assert reporting.page_filename("a/b") != reporting.page_filename("a_b")


def test_every_page_section_has_a_template_block():
    template = (Path(reporting.__file__).parent / "templates" / "patient.html.j2").read_text()
    for name in reporting.PAGE_SECTIONS:
        assert f"{{% block {name} %}}" in template, name


def stage_inputs(run: Run) -> report.ReportInputs:
    ids = run.landmarks["patient_id"].astype(str).unique()
    return report.ReportInputs(
        bundle=run.bundle, landmarks=run.landmarks, measurements=run.measurements, treatments=run.treatments,
        patients=pd.DataFrame({"patient_id": ids, "site": "A"}),
        metrics=json.loads(run.config.paths.metrics.read_text()), oof=pd.read_parquet(run.config.paths.oof),
    )


def test_run_is_pure_and_shows_out_of_fold_risk(run: Run):
    before = run.landmarks.copy()
    out = report.run(run.config, stage_inputs(run))
    pd.testing.assert_frame_equal(run.landmarks, before)
    assert len(out.pages) == run.landmarks["patient_id"].nunique()
    assert 'id="risk-source"' in out.index and "out-of-fold" in out.pages[0][1]
    assert set(out.cohort_bands["target"]) <= {"crs_severe", "icans_severe"} and len(out.cohort_bands)
    assert "Outcome definition and time horizon" in out.model_card


def test_main_reads_and_writes_config_paths(run: Run, tmp_path: Path):
    """The stage on a folder of its own: inputs and outputs through config.paths, no change of directory."""
    paths = run.config.paths
    interim = tmp_path / "interim"
    inputs = stage_inputs(run)
    for name, frame in (("measurements", inputs.measurements), ("treatments", inputs.treatments),
                        ("patients", inputs.patients)):
        write_parquet(frame, interim / f"{name}.parquet")
    config = run.config.model_copy(update={"paths": paths.model_copy(update={
        "interim_dir": interim, "shap_dir": tmp_path / "shap", "patients_dir": tmp_path / "patients",
        "cohort_bands": tmp_path / "cohort_bands.parquet", "model_card": tmp_path / "model_card.html"})})
    report.main(config, pseudonymise=False)
    n = run.landmarks["patient_id"].nunique()
    assert len(list((tmp_path / "patients").glob("*.html"))) == n + 1
    assert (tmp_path / "model_card.html").exists() and (tmp_path / "cohort_bands.parquet").exists()
    # a damaged out-of-fold file is one line naming the file and the stage to rerun
    bad = tmp_path / "oof.parquet"
    write_parquet(inputs.oof.drop(columns=["repeat"]), bad)
    damaged = config.model_copy(update={"paths": config.paths.model_copy(update={"oof": bad})})
    with pytest.raises(UserError, match=r"oof\.parquet: .*'repeat' missing .*crs train"):
        report.main(damaged, pseudonymise=False)


def test_page_shows_the_grade_at_the_landmark_and_what_set_it(run: Run, tmp_path: Path):
    """Issue 10: the page names each syndrome's grade in force at its landmark and the observation (or
    the events table) that set it; a grade after the landmark is not shown."""
    pid = "P0003"
    latest = float(run.landmarks.loc[run.landmarks["patient_id"] == pid, "landmark_hours"].max())
    grades = pd.DataFrame({
        "patient_id": [pid, pid, pid, pid],
        "hours_since_anchor": [latest - 20.0, latest - 5.0, latest - 2.0, latest + 10.0],
        "event": ["CRS", "CRS", "ICANS", "CRS"],
        "grade": [1.0, 2.0, 1.0, 3.0],
        "reason": ["temperature >= 38.0 C in the last 24 h", "O2 device: nasal_cannula", "ICE score 7-9",
                   "1 vasopressor: norepinephrine"],
    })
    write_pages(run, tmp_path / "patients", grades=grades)
    section = re.search(r'<section id="grades">.*?</section>', (tmp_path / "patients" / f"{pid}.html").read_text(),
                        flags=re.S).group(0)
    assert "CRS grade 2</strong> since" in section and "O2 device: nasal_cannula" in section
    assert "ICANS grade 1</strong>" in section and "ICE score 7-9" in section
    assert "norepinephrine" not in section  # after the landmark
    other = (tmp_path / "patients" / "P0004.html").read_text()
    assert "CRS grade 0</strong>: no grade recorded or graded" in other


def test_model_card_describes_the_procedure_that_built_the_deployed_model(run: Run):
    """Section 5 reads the fitted model: repeats from the out-of-fold file, inner folds and boosters,
    what the search chose for the deployed unit and the calibrator it fitted (not the configured defaults)."""
    oof = pd.read_parquet(run.config.paths.oof)
    target = next(iter(run.bundle.targets))
    model = run.bundle.targets[target]
    summary = model_card.procedure_summary(model, oof)
    unit = model.models["all"]
    chosen = model.metadata["models"]["all"]["chosen"]
    assert summary["n_repeats"] == oof.loc[oof["target"] == target, "repeat"].nunique()
    assert summary["inner_folds"] == run.config.train.inner_folds
    [described] = summary["units"]
    assert described["n_boosters"] == len(unit.boosters)
    assert f"{chosen['rounds']} boosting rounds" in described["chosen"]
    assert described["calibration"] == model_card._CALIBRATION_TEXT[unit.calibrator.method]
    card = model_card.render_model_card(
        config=run.config, bundle=run.bundle, metrics=json.loads(run.config.paths.metrics.read_text()),
        landmarks=run.landmarks, patients=None, oof=oof)
    assert described["chosen"].replace("'", "&#39;") in card
    assert "pooled out-of-fold scores" not in card and "held out to fit" not in card
    assert "__baseline_after_anchor" in card  # the post-anchor baseline fallback is described
