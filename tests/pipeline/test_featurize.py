"""The featurize stage: contract of landmarks.parquet, same frame as the transformer, --list, atomic write."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features import FeatureError, LandmarkFeaturizer
from pipeline import featurize
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
    assert model_features == list(featurize.describe_features(config)["name"])
    for code in config.featurize.analytes:
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


def test_main_writes_parquet_and_list_prints(tmp_path, capsys) -> None:
    interim = tmp_path / "interim"
    interim.mkdir()
    for name, df in _tables().items():
        df.to_parquet(interim / f"{name}.parquet", index=False)
    out_path = tmp_path / "processed" / "landmarks.parquet"
    config = _config(paths={"interim_dir": str(interim), "landmarks": str(out_path)})
    featurize.main(config)
    written = pd.read_parquet(out_path)
    pd.testing.assert_frame_equal(written, featurize.run(config, featurize.read_tables(interim)))
    assert isinstance(written["product"].dtype, pd.CategoricalDtype)
    assert [p.name for p in out_path.parent.iterdir()] == ["landmarks.parquet"]  # no temp file left

    capsys.readouterr()
    featurize.main(config, list_features=True)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(featurize.describe_features(config))
    assert lines[1].split()[:2] == ["il6__latest", "pg/mL"]


def test_main_without_ingest_output_is_a_user_error(tmp_path) -> None:
    config = _config(paths={"interim_dir": str(tmp_path / "nope")})
    with pytest.raises(UserError, match="crs ingest"):
        featurize.main(config)
