"""The featurize stage: contract of landmarks.parquet, same frame as the transformer, --list, atomic write."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from features import FeatureError, LandmarkFeaturizer
from pipeline import featurize, grade
from pipeline.config import parse_config
from pipeline.errors import UserError


def _tables() -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(1)
    ids = [f"P{i:03d}" for i in range(30)]
    n = 600
    pid = rng.choice(ids, n)
    hours = rng.uniform(-100, 100, n).round(1)
    analyte = rng.choice(["IL6", "CRP", "LDH", "PLT", "CREAT", "TEMP", "FERRITIN"], n)
    measurements = pd.DataFrame({
        "patient_id": pd.array(pid, dtype="str"),
        "hours_since_anchor": hours,
        "analyte": pd.array(analyte, dtype="str"),
        "value": rng.lognormal(3, 1, n),
        "unit": pd.array(["u"] * n, dtype="str"),
        "censoring": pd.array(rng.choice(["none", "none", "left"], n), dtype="str"),
        "known_analyte": np.ones(n, dtype=bool),
    }).sort_values(["patient_id", "hours_since_anchor"], kind="stable", ignore_index=True)
    patients = pd.DataFrame({
        "patient_id": pd.array(ids, dtype="str"),
        "anchor_time": pd.NaT,
        "age": rng.uniform(20, 80, len(ids)),
        "product": pd.array(rng.choice(["axi-cel", "tisa-cel"], len(ids)), dtype="str"),
    })
    events = pd.DataFrame({
        "patient_id": pd.array(ids[:20], dtype="str"),
        "event": pd.array(rng.choice(["CRS", "ICANS"], 20), dtype="str"),
        "grade": rng.integers(0, 6, 20).astype("int8"),
        "hours_since_anchor": rng.uniform(-10, 200, 20),
    })
    treatments = pd.DataFrame({
        "patient_id": pd.array(ids[:5], dtype="str"),
        "hours_since_anchor": [10.0, 30.0, 50.0, 70.0, 5.0],
        "drug": pd.array(["tocilizumab", "dexamethasone", "tocilizumab", "prednisone", "aspirin"], dtype="str"),
        "dose": np.nan,
        "unit": pd.array([None] * 5, dtype="str"),
    })
    return {"patients": patients, "measurements": measurements, "events": events, "treatments": treatments}


def _config(**overrides):
    raw = {"static_features": ["age", "product"], "landmarks_hours": [0, 24, 48, 72]}
    raw.update(overrides)
    return parse_config(raw)


def test_run_follows_the_contract() -> None:
    config = _config()
    out = featurize.run(config, _tables())
    assert len(out) == 30 * 4
    assert list(out.columns[:2]) == ["patient_id", "landmark_hours"]
    assert pd.api.types.is_string_dtype(out["patient_id"])
    assert out["landmark_hours"].dtype == np.float64
    for target in config.targets:
        assert out[f"label__{target}"].dtype == np.float64
        assert out[f"onset_hours__{target}"].dtype == np.float64
    assert isinstance(out["product"].dtype, pd.CategoricalDtype)
    model_features = [c for c in out.columns if c != "patient_id" and not c.startswith(("label__", "onset_hours__"))]
    # auto (the default): every analyte of the data; 30 patients, each analyte has >= 10 by 72 h.
    assert out.attrs["analytes"] == ["CREAT", "CRP", "FERRITIN", "IL6", "LDH", "PLT", "TEMP"]
    assert model_features == list(featurize.describe_features(config, out.attrs["analytes"])["name"])
    for code in out.attrs["analytes"]:
        assert f"{code.lower()}__fold_change" in out.columns
    assert out.sort_values(["patient_id", "landmark_hours"]).index.equals(out.index)


def test_transformer_gives_the_same_frame_as_the_stage() -> None:
    config = _config()
    tables = _tables()
    stage = featurize.run(config, tables)
    fz = LandmarkFeaturizer.from_config(config)
    notebook = fz.fit(tables["measurements"], patients=tables["patients"]).transform(
        tables["measurements"], patients=tables["patients"], events=tables["events"], treatments=tables["treatments"]
    )
    pd.testing.assert_frame_equal(stage, notebook)


def test_treatments_table_is_optional() -> None:
    tables = _tables()
    del tables["treatments"]
    out = featurize.run(_config(), tables)
    assert (out["tocilizumab__given"] == 0).all() and out["tocilizumab__hours_since"].isna().all()


def test_missing_static_feature_is_a_user_error() -> None:
    with pytest.raises(FeatureError, match="'costim'"):
        featurize.run(_config(static_features=["age", "costim"]), _tables())


def _with_unknown_analytes(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Adds two analytes the registry does not know, for 12 of the 30 patients each (coverage 0.4):
    "Troponin I" always in ng/L (kept) and "Galectin 3" in ng/mL and ug/L (left out: two units)."""
    ids = [f"P{i:03d}" for i in range(12)]
    extra = pd.DataFrame({
        "patient_id": pd.array(ids * 2, dtype="str"),
        "hours_since_anchor": 5.0,
        "analyte": pd.array(["Troponin I"] * 12 + ["Galectin 3"] * 12, dtype="str"),
        "value": 3.0,
        "unit": pd.array(["ng/L"] * 12 + ["ng/mL", "ug/L"] * 6, dtype="str"),
        "censoring": pd.array(["none"] * 24, dtype="str"),
        "known_analyte": np.zeros(24, dtype=bool),
    })
    m = pd.concat([tables["measurements"], extra], ignore_index=True)
    return {**tables, "measurements": m.sort_values(["patient_id", "hours_since_anchor"], kind="stable", ignore_index=True)}


def _write_interim(directory, tables) -> None:
    directory.mkdir()
    for name, df in tables.items():
        df.to_parquet(directory / f"{name}.parquet", index=False)


def test_main_writes_parquet_feature_set_and_list_prints(tmp_path, capsys) -> None:
    interim = tmp_path / "interim"
    _write_interim(interim, _with_unknown_analytes(_tables()))
    out_path = tmp_path / "processed" / "landmarks.parquet"
    report_path = tmp_path / "reports" / "feature_set.json"
    paths = {"interim_dir": str(interim), "landmarks": str(out_path), "feature_set": str(report_path),
             "graded_dir": str(tmp_path / "graded"), "grading_report": str(tmp_path / "reports" / "grading.json")}
    config = _config(paths=paths)
    with pytest.raises(UserError, match="run `crs grade` first"):
        featurize.main(config)
    grade.main(config)
    featurize.main(config)
    written = pd.read_parquet(out_path)
    tables = {**featurize.read_tables(interim), **featurize.read_graded(tmp_path / "graded")}
    pd.testing.assert_frame_equal(written, featurize.run(config, tables))
    chosen = ["CREAT", "CRP", "FERRITIN", "IL6", "LDH", "PLT", "TEMP", "TROPONIN I"]
    assert written.attrs["analytes"] == chosen  # round-trips through parquet
    assert "troponin_i__latest" in written.columns and not written.columns.str.startswith("galectin").any()
    assert isinstance(written["product"].dtype, pd.CategoricalDtype)
    assert [p.name for p in out_path.parent.iterdir()] == ["landmarks.parquet"]  # no temp file left

    report = json.loads(report_path.read_text())
    assert report["mode"] == "auto" and report["analytes"] == chosen
    assert report["rule"] == {"min_coverage": 0.2, "min_patients": 10, "at_or_before_hours": 72.0,
                              "baseline_fallback_hours": 24.0}
    troponin = next(u for u in report["used"] if u["analyte"] == "TROPONIN I")
    assert (troponin["known"], troponin["units"], troponin["n_patients"], troponin["coverage"]) == (
        False, ["ng/L"], 12, 0.4)
    # Troponin only at +5 h: no row has a pre-anchor baseline; the fallback (5 h <= min(L, 24)) from L = 24 h on.
    assert troponin["baseline_by_landmark"]["0"] == {"pre_anchor": 0, "after_anchor": 0, "none": 30}
    assert troponin["baseline_by_landmark"]["24"] == {"pre_anchor": 0, "after_anchor": 12, "none": 18}
    [galectin] = report["excluded"]
    assert galectin["analyte"] == "GALECTIN 3" and "2 units (ng/mL, ug/L)" in galectin["reason"]

    capsys.readouterr()
    featurize.main(config, list_features=True)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("analytes: 8 used, auto (>= 0.2 of patients and >= 10 patients")
    assert lines[1].split() == ["CREAT", "coverage", "0.900", "(27", "patients)", "used"]
    [galectin_line] = [line for line in lines if "GALECTIN 3" in line]
    assert "coverage 0.400 (12 patients)  left out: unknown to the registry with 2 units" in galectin_line
    features = lines[lines.index("") + 1:]
    assert len(features) == len(featurize.describe_features(config, chosen))
    assert features[1].split()[:2] == ["creat__latest", "mg/dL"]


def test_list_before_ingest_says_analytes_come_from_the_data(tmp_path, capsys) -> None:
    featurize.main(_config(paths={"interim_dir": str(tmp_path / "nope")}), list_features=True)
    lines = capsys.readouterr().out.strip().splitlines()
    assert "chosen from the data at featurize time" in lines[0]
    assert lines[lines.index("") + 2].split()[0] == "<analyte>__latest"
    featurize.main(_config(featurize={"analytes": ["IL6", "CRP"]}, paths={"interim_dir": str(tmp_path / "nope")}),
                   list_features=True)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "analytes: IL6, CRP (from params)" and lines[3].split()[0] == "il6__latest"


def test_explicit_list_is_validated_and_kept() -> None:
    with pytest.raises(UserError, match="TROPONIN"):
        _config(featurize={"analytes": ["IL6", "TROPONIN"]})  # unknown names only in auto mode
    with pytest.raises(UserError, match="featurize.analytes"):
        _config(featurize={"analytes": "all"})
    out = featurize.run(_config(featurize={"analytes": ["IL6", "CRP"]}), _tables())
    assert out.attrs["analytes"] == ["IL6", "CRP"] and "ldh__latest" not in out.columns


def test_main_without_ingest_output_is_a_user_error(tmp_path) -> None:
    config = _config(paths={"interim_dir": str(tmp_path / "nope")})
    with pytest.raises(UserError, match="crs ingest"):
        featurize.main(config)


def test_training_summary_counts_censored_rows_from_the_ingest_words() -> None:
    """Ingest writes censoring as words; the stored summary's censored fraction counts them per analyte."""
    tables = _tables()
    frame = featurize.run(_config(), tables)
    summary = frame.attrs[featurize.SUMMARY_ATTR]
    m = tables["measurements"]
    window = m[(m["hours_since_anchor"] >= -168) & (m["hours_since_anchor"] <= 72)]
    expected = (window["censoring"] == "left").groupby(window["analyte"]).mean()
    stored = {code: entry["censored_fraction"] for code, entry in summary["analytes"].items()}
    assert expected.max() > 0.2
    for code, share in expected.items():
        assert stored[code] == pytest.approx(share, abs=1e-5)


def test_summary_measurements_codes_follow_the_drift_convention() -> None:
    m = pd.DataFrame({"censoring": pd.array(["none", "left", "right", None], dtype="str")})
    assert featurize.summary_measurements(m)["censoring"].tolist() == [0, 1, 2, 0]
    assert featurize.summary_measurements(m.drop(columns="censoring")).columns.tolist() == []


def test_tiny_patient_chunks_give_the_identical_landmark_table() -> None:
    tables = _tables()
    whole = featurize.run(_config(), tables)
    chunked = featurize.run(_config(featurize={"chunk_patients": 7}), tables)
    assert whole["patient_id"].nunique() == 30
    pd.testing.assert_frame_equal(chunked, whole)
    assert chunked.attrs == whole.attrs


def test_chunk_size_is_validated() -> None:
    with pytest.raises(UserError, match="chunk_patients"):
        _config(featurize={"chunk_patients": 0})


def test_thread_count_is_validated_and_reaches_the_featurizer() -> None:
    with pytest.raises(UserError, match="n_threads"):
        _config(featurize={"n_threads": 0})
    assert LandmarkFeaturizer.from_config(_config(featurize={"n_threads": 3})).n_threads == 3
    assert LandmarkFeaturizer.from_config(_config()).n_threads == "auto"  # resolved where it runs


def test_the_measurement_statistics_computed_ahead_are_used_and_equal_the_inline_ones(monkeypatch) -> None:
    """featurize computes the drift summary's measurement statistics in a second thread before the landmark
    table exists: they are computed once (not again after the table) and the summary is the one computed
    from the finished table alone."""
    from pipeline.validation import drift

    calls = []
    real = drift._analyte_stats
    monkeypatch.setattr(drift, "_analyte_stats", lambda *a: calls.append(1) or real(*a))
    tables = _tables()
    frame = featurize.run(_config(), tables)
    assert len(calls) == 1
    inline = featurize.training_summary(frame, tables["measurements"])
    assert len(calls) == 2 and frame.attrs[featurize.SUMMARY_ATTR]["analytes"]
    assert frame.attrs[featurize.SUMMARY_ATTR] == inline
    # Statistics for other patients are not trusted: recomputed.
    other = drift.measurement_stats(featurize.summary_measurements(tables["measurements"]),
                                    np.array(["nobody"], dtype=object), 72.0)
    assert featurize.training_summary(frame, tables["measurements"], other) == inline


def test_read_tables_gives_categorical_text_and_the_same_frame_and_summary(tmp_path) -> None:
    """Measurement text read as Parquet dictionaries (categoricals, issue 14) gives the landmark matrix,
    the drift summary and the analyte choice of the same text read as plain strings; a row group whose
    dictionary lacks a category (several row groups) and missing censoring words included."""
    tables = _with_unknown_analytes(_tables())
    m = tables["measurements"]
    tables["measurements"] = m.assign(censoring=m["censoring"].where(np.arange(len(m)) % 7 != 0, None))
    interim = tmp_path / "interim"
    interim.mkdir()
    for name, df in tables.items():
        df.to_parquet(interim / f"{name}.parquet", index=False, row_group_size=50)
    read = featurize.read_tables(interim)
    text = ["patient_id", "analyte", "unit", "censoring"]
    assert all(isinstance(read["measurements"][c].dtype, pd.CategoricalDtype) for c in text)
    assert read["measurements"].attrs == {}
    plain = {name: pd.read_parquet(interim / f"{name}.parquet") for name in tables}
    assert not any(isinstance(plain["measurements"][c].dtype, pd.CategoricalDtype) for c in text)
    config = _config()
    got, fz = featurize.featurize(config, read)
    want, fz_plain = featurize.featurize(config, plain)
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    assert json.dumps(got.attrs, sort_keys=True) == json.dumps(want.attrs, sort_keys=True)
    pd.testing.assert_frame_equal(fz.analyte_choice_, fz_plain.analyte_choice_)
