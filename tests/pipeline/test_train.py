"""crs train on synthetic landmark frames in the CONTRACTS.md schema (no featurize stage needed)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import contracts, train
from pipeline.config import parse_config
from pipeline.errors import UserError
from pipeline.io import write_parquet
from pipeline.model import (
    BASELINES,
    Calibrator,
    FeatureSpec,
    apply_feature_specs,
    build_feature_specs,
    fit_calibrator,
    load_bundle,
)
from pipeline.model.specs import matrix_values
from pipeline.training.booster import check_monotone_constraints, dmatrix, fit_booster
from pipeline.training.crossfit import fit_procedure
from pipeline.training.cv import run_fold
from pipeline.training.final import prepare_target
from pipeline.training.splits import grouped_splits
from tests.helpers import paths_in

LANDMARKS = [0.0, 24.0, 48.0, 72.0]


def make_landmarks(
    n_patients: int = 240, seed: int = 0, *, with_scores: bool = True, icans: bool = True
) -> pd.DataFrame:
    """Landmark rows whose severe-CRS label depends on ``il6__fold_change`` (known signal).

    EASIX / CRP / ferritin are pure noise, so a sound model must beat them clearly.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_patients):
        pid = f"P{i:04d}"
        risk = rng.normal()
        product = rng.choice(["axi-cel", "tisa-cel", "liso-cel"])
        age = float(rng.integers(20, 80))
        p_event = 1 / (1 + np.exp(-(-1.4 + 2.2 * risk)))
        onset_crs = float(rng.uniform(10, 200)) if rng.random() < p_event else np.nan
        onset_icans = float(rng.uniform(30, 300)) if rng.random() < 0.2 + 0.2 * (risk > 0) else np.nan
        for lm in LANDMARKS:
            row = {
                "patient_id": pid,
                "landmark_hours": lm,
                "il6__fold_change": risk + rng.normal(scale=0.4) + (np.nan if rng.random() < 0.05 else 0.0),
                "il6__latest": float(np.exp(rng.normal(2, 1))),
                "crp__latest": float(np.exp(rng.normal(1, 1))),
                "ferritin__latest": float(np.exp(rng.normal(6, 1))),
                "temp__max": 37 + rng.normal(scale=0.5),
                "age": age,
                "product": product,
            }
            if with_scores:
                row["easix__latest"] = float(np.exp(rng.normal(0, 1)))
                row["m_easix__latest"] = np.nan if rng.random() < 0.3 else float(np.exp(rng.normal(0, 1)))
                row["car_hematotox__baseline"] = float(rng.integers(0, 6))
            for name, onset in (("crs_severe", onset_crs), ("icans_severe", onset_icans)):
                if name == "icans_severe" and not icans:
                    continue
                row[f"label__{name}"] = np.nan if onset <= lm else float(onset > lm)
                row[f"onset_hours__{name}"] = onset
            rows.append(row)
    df = pd.DataFrame(rows)
    df["patient_id"] = df["patient_id"].astype("string")
    df["product"] = df["product"].astype("category")
    return df


def small_config(**train_overrides):
    train_params = {
        "n_splits": 3,
        "n_repeats": 1,
        "n_estimators": 40,
        "n_bootstrap": 50,
        "calibration_fraction": 0.34,
        "n_trials": 2,
        "max_rounds": 60,
        "monotone_constraints": {"il6__fold_change": 1},
        **train_overrides,
    }
    return parse_config(
        {
            "targets": {"crs_severe": {"event": "CRS", "min_grade": 3}},
            "landmarks_hours": LANDMARKS,
            "train": train_params,
        }
    )


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Stage outputs under tmp_path (``paths_in``) and a private MLflow store (never the repo's mlflow.db)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return tmp_path


def write_landmarks(df: pd.DataFrame, config) -> None:
    df = df.copy()
    # featurize records the analytes it built the table from; the model stores them for scoring.
    df.attrs["analytes"] = sorted({c.split("__")[0].upper() for c in df.columns if c.startswith(("il6__", "crp__"))})
    write_parquet(df, config.paths.landmarks)


def test_feature_columns_exclude_labels_and_onsets():
    df = make_landmarks(10)
    cols = contracts.feature_columns(df.columns)
    assert "patient_id" not in cols
    assert not [c for c in cols if c.startswith(("label__", "onset_hours__"))]
    assert "landmark_hours" in cols and "il6__fold_change" in cols
    specs = {s.name: s for s in build_feature_specs(df, cols)}
    assert specs["product"].dtype == "category"
    assert specs["product"].categories == ("axi-cel", "liso-cel", "tisa-cel")


def test_folds_are_grouped_by_patient_and_stratified():
    df = make_landmarks(120)
    rows = df[df["label__crs_severe"].notna()].reset_index(drop=True)
    y = rows["label__crs_severe"].to_numpy().astype(int)
    groups = rows["patient_id"].astype(str).to_numpy()
    splits = grouped_splits(y, groups, 5, seed=3)
    assert len(splits) == 5
    seen_test = set()
    for tr, te in splits:
        assert set(groups[tr]).isdisjoint(groups[te])
        assert y[te].sum() > 0
        seen_test |= set(te)
    assert seen_test == set(range(len(y)))


def test_calibrator_roundtrip_and_monotone():
    rng = np.random.default_rng(1)
    raw = rng.uniform(0, 1, 500)
    y = (rng.uniform(0, 1, 500) < raw**2).astype(float)
    for method in ("isotonic", "sigmoid"):
        cal = fit_calibrator(raw, y, method)
        again = Calibrator.from_json(json.loads(json.dumps(cal.to_json())))
        grid = np.linspace(0, 1, 50)
        assert np.allclose(cal.predict(grid), again.predict(grid))
        assert np.all(np.diff(cal.predict(grid)) >= -1e-12)


def test_platt_never_reverses_the_ranking_and_stays_finite_on_separable_scores():
    rng = np.random.default_rng(4)
    noise_raw, noise_y = rng.uniform(0.1, 0.9, 300), (rng.uniform(size=300) < 0.3).astype(float)
    noise_y[np.argsort(noise_raw)[:90]] = 1.0  # events sit at the LOW scores: an unconstrained fit has a < 0
    cal = fit_calibrator(noise_raw, noise_y, "sigmoid")
    assert cal.a > 0
    grid = np.linspace(0.05, 0.95, 50)
    assert np.all(np.diff(cal.predict(grid)) > 0)  # the boosters' ranking is kept
    # Held-out scores that separate the classes perfectly: Platt's smoothed targets keep the slope finite.
    raw = np.r_[rng.uniform(0.01, 0.3, 200), rng.uniform(0.5, 0.9, 50)]
    y = np.r_[np.zeros(200), np.ones(50)]
    sep = fit_calibrator(raw, y, "sigmoid")
    assert 0 < sep.a < 20 and 0 < sep.predict(np.array([0.01]))[0] < sep.predict(np.array([0.9]))[0] < 1


def test_landmark_intercepts_fix_a_landmark_the_pooled_fit_gets_wrong():
    """Same raw scores at two landmarks, but events twice as likely at 72 h: one pooled Platt map is off at
    both; the landmark offset puts each landmark's mean risk on its event rate (and survives JSON)."""
    rng = np.random.default_rng(3)
    raw = rng.uniform(0.05, 0.6, 4000)
    hours = np.repeat([24.0, 72.0], 2000)
    y = (rng.uniform(0, 1, 4000) < np.where(hours == 72.0, np.minimum(2 * raw, 1), raw)).astype(float)
    cal = fit_calibrator(raw, y, "sigmoid", hours, min_landmark_events=10)
    assert set(cal.landmark_offsets) == {24.0, 72.0} and cal.landmark_offsets[72.0] > cal.landmark_offsets[24.0]
    for h in (24.0, 72.0):
        rows = hours == h
        assert abs(cal.predict(raw[rows], hours[rows]).mean() - y[rows].mean()) < 0.01  # calibration in the large
    again = Calibrator.from_json(json.loads(json.dumps(cal.to_json())))
    assert np.array_equal(again.predict(raw, hours), cal.predict(raw, hours))
    # Between trained landmarks the offset is interpolated in hours: 48 h sits halfway.
    mid = cal.predict(np.array([0.3]), 48.0)[0]
    assert cal.predict(np.array([0.3]), 24.0)[0] < mid < cal.predict(np.array([0.3]), 72.0)[0]
    # Too few events at a landmark: no offset of its own.
    assert fit_calibrator(raw, y, "sigmoid", hours, min_landmark_events=5000).landmark_offsets == {}


def test_train_end_to_end(workdir: Path):
    config = paths_in(small_config(), workdir)
    df = make_landmarks(240, seed=2)
    write_landmarks(df, config)
    train.main(config)

    oof = pd.read_parquet(config.paths.oof)
    expected_rows = df["label__crs_severe"].notna().sum()
    assert len(oof) == expected_rows  # one repeat: every labelled row exactly once
    assert set(oof["target"]) == {"crs_severe"}
    for col in ("patient_id", "landmark_hours", "repeat", "fold", "label", "prob__model", "threshold__model"):
        assert col in oof.columns
    available = json.loads((config.paths.models_dir / "crs_severe" / "metadata.json").read_text())["baselines"]
    assert set(available) == set(BASELINES)
    for name in BASELINES:  # every baseline is scored, or says why it cannot be on this table
        assert (f"prob__{name}" in oof.columns) == available[name]["available"]
    assert available["hay_2017"]["available"] is False and available["logistic_regression"]["available"]
    assert oof["prob__model"].between(0, 1).all()
    # No patient in two folds of the same repeat.
    assert (oof.groupby(["repeat", "patient_id"])["fold"].nunique() == 1).all()

    model_dir = config.paths.models_dir / "crs_severe"
    boosters = {f"booster_{k}.json" for k in range(config.train.inner_folds)}  # cross-fitted, one per inner fold
    assert {p.name for p in model_dir.iterdir()} == boosters | {"calibrator.json", "features.json", "metadata.json"}
    meta = json.loads((model_dir / "metadata.json").read_text())
    assert meta["n_rows"] == expected_rows and meta["n_events"] == int(df["label__crs_severe"].sum())
    assert len(meta["data_sha256"]) == 64
    assert meta["xgboost_params"]["monotone_constraints"] == {"il6__fold_change": 1}
    # The constraint reaches the right column (boosters get constraints by position): raising
    # il6__fold_change alone never lowers the deployed model's risk.
    deployed = load_bundle(config.paths.models_dir).targets["crs_severe"]
    probe = pd.concat([df.iloc[[0]]] * 25, ignore_index=True)
    probe["il6__fold_change"] = np.linspace(-3, 3, 25)
    assert np.all(np.diff(deployed.predict(probe)) >= -1e-12)
    features = json.loads((model_dir / "features.json").read_text())["features"]
    assert [f["name"] for f in features] == contracts.feature_columns(df.columns)
    assert not any(p.suffix in {".pkl", ".pickle", ".joblib"} for p in (config.paths.models_dir).rglob("*"))

    # What the search chose is recorded with the model.
    assert {"rounds", "feature_set", "max_depth", "eta", "linear_weight"} <= set(meta["models"]["all"]["chosen"])
    assert meta["analytes"] == ["CRP", "IL6"]

    # Validated band cut-offs per landmark: "low" below the deployed alert threshold; "high" from the
    # out-of-fold probability that keeps 90% of the patients without the event unflagged (issue 13).
    oof_all = pd.read_parquet(config.paths.oof)
    deployed_model = load_bundle(config.paths.models_dir).targets["crs_severe"]
    for key, cut in meta["bands"]["by_landmark"].items():
        at = oof_all[(oof_all["landmark_hours"] == float(key)) & oof_all["prob__model"].notna()]
        assert cut["low_below"] == pytest.approx(float(deployed_model.threshold_array(np.array([float(key)]))[0]))
        negatives = at.loc[at["label"] == 0, "prob__model"]
        assert (negatives < cut["high_from"]).mean() >= 0.9 and cut["high_from"] >= cut["low_below"]

    runs = json.loads((config.paths.models_dir / "runs.json").read_text())
    assert set(runs["targets"]) == {"crs_severe"}
    import mlflow

    run = mlflow.get_run(runs["targets"]["crs_severe"])
    assert run.data.tags["data_sha256"] == meta["data_sha256"]
    assert run.data.params["train.max_depth"] == "3"
    assert run.data.tags["mlflow.parentRunId"] == runs["parent_run_id"]
    assert len(run.inputs.dataset_inputs) == 1
    # The analytes featurize chose (issue 17): a tag and the full list as an artifact of the parent run.
    parent = mlflow.get_run(runs["parent_run_id"])
    assert parent.data.tags["analytes"] == "CRP,IL6"
    chosen = mlflow.artifacts.load_dict(f"{parent.info.artifact_uri}/featurize/analytes.json")
    assert chosen == {"analytes": ["CRP", "IL6"]}
    # Registering the MLflow model is the `register` stage's job, not a side effect of training.
    assert mlflow.MlflowClient().search_registered_models() == []


def test_unavailable_baselines_do_not_crash(workdir: Path):
    config = paths_in(small_config(), workdir)
    df = make_landmarks(150, seed=4, with_scores=False)
    df["crp__latest"] = np.nan
    write_landmarks(df, config)
    train.main(config)
    meta = json.loads((config.paths.models_dir / "crs_severe" / "metadata.json").read_text())
    assert meta["baselines"]["easix"] == {"available": False, "reason": "column 'easix__latest' not in landmarks.parquet"}
    assert meta["baselines"]["crp_latest"]["available"] is False
    assert meta["baselines"]["il6_latest"] == {"available": True}
    oof = pd.read_parquet(config.paths.oof)
    assert "prob__easix" not in oof.columns and "prob__il6_latest" in oof.columns


def test_a_rerun_writes_the_same_model_bytes_and_only_new_run_ids(workdir: Path, monkeypatch: pytest.MonkeyPatch):
    """Issue 13 (clean `git status` after `make run`): unchanged code and data give byte-identical model
    files; only models/runs.json (MLflow run ids, excluded from DVC's hash by .dvcignore) changes. The
    metadata names the code by digest, not by git commit (a commit would change the bytes)."""
    config = paths_in(small_config(n_trials=1, tune=False, n_estimators=10), workdir)
    write_landmarks(make_landmarks(80, seed=6), config)
    models = config.paths.models_dir

    def snapshot() -> dict[str, bytes]:
        return {p.relative_to(models).as_posix(): p.read_bytes() for p in sorted(models.rglob("*")) if p.is_file()}

    train.main(config)
    first = snapshot()
    monkeypatch.setattr(train.tracking, "git_commit", lambda cwd=".": "0" * 40)  # as after a new commit
    train.main(config)
    second = snapshot()
    assert first.keys() == second.keys() and "runs.json" in first
    assert {k for k in first if first[k] != second[k]} == {"runs.json"}
    meta = json.loads(first["crs_severe/metadata.json"])
    assert "git_commit" not in meta and len(meta["code_sha256"]) == 64
    assert "/models/runs.json" in (Path(__file__).resolve().parents[2] / ".dvcignore").read_text().split()


def test_per_landmark_models(workdir: Path):
    config = paths_in(small_config(per_landmark=True, n_estimators=20), workdir)
    df = make_landmarks(160, seed=5)
    write_landmarks(df, config)
    train.main(config)
    model_dir = config.paths.models_dir / "crs_severe"
    assert (model_dir / "landmark_0" / "booster_0.json").exists()
    assert (model_dir / "landmark_72" / "calibrator.json").exists()
    meta = json.loads((model_dir / "metadata.json").read_text())
    assert set(meta["models"]) == {"0", "24", "48", "72"}


def test_target_without_enough_events_is_skipped(workdir: Path):
    config = parse_config(
        {
            "targets": {"crs_severe": {"event": "CRS", "min_grade": 3}, "death": {"event": "DEATH", "min_grade": 5}},
            "train": {"n_splits": 3, "n_repeats": 1, "n_estimators": 20, "calibration_fraction": 0.34},
        }
    )
    config = paths_in(config, workdir)
    df = make_landmarks(90, seed=6, icans=False)
    df["label__death"] = 0.0
    df.loc[0, "label__death"] = 1.0
    write_landmarks(df, config)
    train.main(config)
    meta = json.loads((config.paths.models_dir / "death" / "metadata.json").read_text())
    assert "skipped" in meta
    assert (config.paths.models_dir / "crs_severe" / "booster_0.json").exists()


def test_missing_landmarks_is_a_user_error(workdir: Path):
    with pytest.raises(UserError, match="landmarks.parquet"):
        train.main(paths_in(small_config(), workdir))


def test_out_of_fold_predictions_ignore_test_fold_labels():
    """The leak guard: flipping every label in the test fold (and so the test rows' events)
    changes no out-of-fold prediction of the model or of any baseline."""
    config = small_config(monotone_constraints={})
    df = make_landmarks(n_patients=160, seed=3)
    specs = build_feature_specs(df, contracts.feature_columns(df.columns))
    prepared = prepare_target(df, "crs_severe", config.train, specs, {})
    repeat, fold, tr, te = prepared.splits[0]
    assert not set(prepared.data.groups[tr]) & set(prepared.data.groups[te])  # patients never straddle

    def run_with_labels_flipped(rows: np.ndarray):
        y = prepared.data.y.copy()
        y[rows] = 1 - y[rows]
        data = dataclasses.replace(prepared.data, y=y)
        return run_fold(data, config.train, repeat, fold, tr, te)

    honest = run_fold(prepared.data, config.train, repeat, fold, tr, te)
    flipped = run_with_labels_flipped(te)
    probability_columns = [c for c in honest.columns if c.startswith(("prob__", "raw__", "threshold__"))]
    assert "prob__model" in probability_columns and honest["prob__model"].notna().all()
    pd.testing.assert_frame_equal(honest[probability_columns], flipped[probability_columns])
    # ... while flipping training labels does change them, so the comparison can fail.
    changed = run_with_labels_flipped(tr)
    assert not np.allclose(changed["prob__model"], honest["prob__model"])


def test_monotone_constraint_on_unknown_feature_is_an_error():
    specs = [FeatureSpec("il6__fold_change", "float64"), FeatureSpec("product", "category", ("a",))]
    check_monotone_constraints({"il6__fold_change": 1}, specs)
    with pytest.raises(UserError, match=r"train\.monotone_constraints\.il6__fold_chnage': not a model feature"):
        check_monotone_constraints({"il6__fold_chnage": 1}, specs)
    with pytest.raises(UserError, match="categorical"):
        check_monotone_constraints({"product": 1}, specs)


#: Trees that learn almost nothing (one round, tiny steps, no search): the inner folds' held-out loss
#: then takes the simple-summaries boosters at full weight, so the blended unit is what is checked.
SIMPLE_BLEND = {"tune": False, "n_estimators": 1, "learning_rate": 0.01, "simple_weights": [1.0], "linear_weights": []}


@pytest.mark.parametrize("overrides", [{}, SIMPLE_BLEND], ids=["default", "simple-blend"])
def test_deployed_model_is_the_validated_procedure(workdir: Path, overrides: dict):
    """The model in models/ is exactly what `fit_procedure` builds on all rows, and every out-of-fold
    prediction is that same procedure fitted on the fold's training rows and scored as a new patient."""
    config = paths_in(small_config(**overrides), workdir)
    df = make_landmarks(200, seed=8)
    if overrides:  # a simple-summaries set needs an analyte with a count; its "first" carries the risk signal
        df = df.assign(il6__count=1.0, il6__first=df["il6__fold_change"])
    write_landmarks(df, config)
    train.main(config)
    rows = df[df["label__crs_severe"].notna()].reset_index(drop=True)
    specs = build_feature_specs(df, contracts.feature_columns(df.columns))
    prepared = prepare_target(df, "crs_severe", config.train, specs, {})
    data, cfg = prepared.data, config.train
    deployed = load_bundle(config.paths.models_dir).targets["crs_severe"]
    if overrides:  # the simple boosters were stored, verified and loaded with the blend weight
        assert deployed.models["all"].simple_weight == 1.0 and len(deployed.models["all"].simple) == 3

    refit = fit_procedure(data.X, data.y, data.groups, data.landmarks, cfg, specs, cfg.seed).model
    expected = refit.probability(refit.margin(matrix_values(data.X)), data.landmarks)
    assert np.array_equal(deployed.predict(rows), expected)  # same object, same scores on the same rows

    repeat, fold, tr, te = prepared.splits[0]
    in_fold = fit_procedure(data.X.iloc[tr], data.y[tr], data.groups[tr], data.landmarks[tr], cfg, specs,
                            cfg.seed + 1000 * repeat + fold).model
    fold_scores = in_fold.probability(in_fold.margin(matrix_values(data.X.iloc[te])), data.landmarks[te])
    reported = run_fold(data, cfg, repeat, fold, tr, te)["prob__model"].to_numpy()
    assert np.array_equal(reported, fold_scores)
    oof = pd.read_parquet(config.paths.oof)
    first = oof[(oof["repeat"] == repeat) & (oof["fold"] == fold)].set_index(["patient_id", "landmark_hours"])
    keys = pd.MultiIndex.from_arrays([data.groups[te], data.landmarks[te]])
    assert np.array_equal(first.loc[keys, "prob__model"].to_numpy(), fold_scores)


def test_monotone_constraint_binds_the_named_feature():
    """Constrain il6__fold_change *against* its true effect (risk rises with it in make_landmarks): if the
    constraint reached another column, the booster would learn the rise and this would fail."""
    config = small_config(monotone_constraints={"il6__fold_change": -1})
    df = make_landmarks(200, seed=9)
    rows = df[df["label__crs_severe"].notna()].reset_index(drop=True)
    specs = build_feature_specs(rows, contracts.feature_columns(rows.columns))
    X = apply_feature_specs(rows, specs)
    booster = fit_booster(X, rows["label__crs_severe"].to_numpy(int), config.train, specs, seed=1)
    probe = pd.concat([X.iloc[[0]]] * 25, ignore_index=True)
    probe["il6__fold_change"] = np.linspace(-3, 3, 25)
    assert np.all(np.diff(booster.predict(dmatrix(probe, None, 1))) <= 1e-7)
