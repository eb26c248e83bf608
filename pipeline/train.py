"""``crs train``: patient-grouped repeated cross-validation, calibration and final XGBoost models.

For each target (rows with a non-NaN ``label__<target>``):

* outer loop: ``n_repeats`` x ``n_splits`` StratifiedGroupKFold grouped by patient (new shuffle seed per
  repeat), so a patient's landmark rows are never split across train and test;
* inside each outer *training* fold only: a booster fitted on part of the fold scores held-out
  training-fold patients (``calibration_fraction``, grouped and stratified); the calibrator (isotonic /
  sigmoid) and the threshold for ``sensitivity_target`` are fitted on those scores, and the fold's
  booster is refitted on the whole training fold. The test fold is only ever predicted;
* baselines are scored on exactly the same rows and folds (raw scores recalibrated by a one-variable
  logistic model fitted on the training fold; an L2 logistic regression with imputation, scaling and
  one-hot encoding fitted on the training fold);
* final model: booster on all rows, calibrator fitted on the pooled out-of-fold raw scores of the
  outer CV (all repeats), threshold chosen on those calibrated out-of-fold scores.

Outputs: ``data/processed/oof.parquet``, ``models/<target>/`` (booster.json, calibrator.json,
features.json, metadata.json; JSON only, no pickle) and ``models/runs.json`` (MLflow run ids).
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline import metrics as M
from pipeline import tracking
from pipeline.config import Config, TrainConfig, landmark_key
from pipeline.errors import UserError
from pipeline.io import atomic_dir, read_stage_parquet, write_json, write_parquet

OOF_PATH = Path("data/processed/oof.parquet")
MODELS_DIR = Path("models")
RUNS_PATH = MODELS_DIR / "runs.json"

ID_COLUMNS = ("patient_id",)
LABEL_PREFIX = "label__"
ONSET_PREFIX = "onset_hours__"

#: Published / single-marker baselines: name -> landmark column (higher = higher risk, CLINICAL.md s5).
SCORE_BASELINES: dict[str, str] = {
    "easix": "easix__latest",
    "m_easix": "m_easix__latest",
    "car_hematotox": "car_hematotox__baseline",
    "il6_latest": "il6__latest",
    "crp_latest": "crp__latest",
    "ferritin_latest": "ferritin__latest",
}
LOGISTIC_BASELINE = "logistic_regression"
BASELINES: tuple[str, ...] = (*SCORE_BASELINES, LOGISTIC_BASELINE)
MODEL = "model"


# --------------------------------------------------------------------------- features


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    dtype: str  # "float64" or "category"
    categories: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "dtype": self.dtype}
        if self.dtype == "category":
            out["categories"] = list(self.categories)
        return out


def feature_columns(df: pd.DataFrame) -> list[str]:
    """Model features per CONTRACTS.md: everything but ids, labels and onset hours (never features)."""
    return [
        c
        for c in df.columns
        if c not in ID_COLUMNS and not c.startswith(LABEL_PREFIX) and not c.startswith(ONSET_PREFIX)
    ]


def build_feature_specs(df: pd.DataFrame, columns: list[str]) -> list[FeatureSpec]:
    specs = []
    for col in columns:
        series = df[col]
        if isinstance(series.dtype, pd.CategoricalDtype):
            cats = tuple(str(c) for c in series.cat.categories)
            specs.append(FeatureSpec(col, "category", tuple(sorted(cats))))
        elif pd.api.types.is_bool_dtype(series.dtype) or pd.api.types.is_numeric_dtype(series.dtype):
            specs.append(FeatureSpec(col, "float64"))
        else:  # text covariates become categoricals (vocabulary only, no label information)
            cats = sorted({str(v) for v in series.dropna().unique()})
            specs.append(FeatureSpec(col, "category", tuple(cats)))
    return specs


def apply_feature_specs(df: pd.DataFrame, specs: list[FeatureSpec]) -> pd.DataFrame:
    """Model matrix with fixed column order and dtypes (same category lists in every fold)."""
    out = {}
    for spec in specs:
        series = df[spec.name] if spec.name in df.columns else pd.Series(np.nan, index=df.index)
        if spec.dtype == "category":
            text = series.astype("object").where(series.notna(), None)
            text = text.map(lambda v: None if v is None else str(v))
            out[spec.name] = pd.Categorical(text, categories=list(spec.categories))
        else:
            out[spec.name] = pd.to_numeric(series.astype("object"), errors="coerce").astype("float64")
    return pd.DataFrame(out, index=df.index)


# --------------------------------------------------------------------------- calibration


@dataclass
class Calibrator:
    """Maps raw booster probabilities to calibrated ones; serialised as plain JSON numbers."""

    method: str
    x: list[float] = field(default_factory=list)  # isotonic knots (raw score)
    y: list[float] = field(default_factory=list)  # isotonic knots (calibrated probability)
    a: float = 1.0  # sigmoid: p = 1 / (1 + exp(-(a * logit(raw) + b)))
    b: float = 0.0

    def predict(self, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw, dtype=float)
        if self.method == "isotonic":
            if not self.x:
                return raw
            return np.interp(raw, self.x, self.y)  # constant beyond the ends, as sklearn's "clip"
        if self.method == "sigmoid":
            eta = np.clip(self.a * M._logit(raw) + self.b, -30, 30)
            return 1 / (1 + np.exp(-eta))
        return raw  # "identity": too few events to calibrate

    def to_json(self) -> dict[str, Any]:
        if self.method == "isotonic":
            return {"method": "isotonic", "x": self.x, "y": self.y}
        if self.method == "sigmoid":
            return {"method": "sigmoid", "a": self.a, "b": self.b, "formula": "1/(1+exp(-(a*logit(p)+b)))"}
        return {"method": "identity"}


def fit_calibrator(raw: np.ndarray, y: np.ndarray, method: str) -> Calibrator:
    raw = np.asarray(raw, dtype=float)
    y = np.asarray(y, dtype=float)
    if len(np.unique(y)) < 2:
        return Calibrator("identity")
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(raw, y)
        knots_x = np.asarray(iso.X_thresholds_, dtype=float)
        knots_y = np.asarray(iso.y_thresholds_, dtype=float)
        # Small calibration sets give isotonic blocks with no (or only) events, i.e. risks of exactly
        # 0 or 1. Shrink each block's event rate by add-one smoothing, (events + 1) / (n + 2), and
        # restore monotonicity, so no patient is ever told 0% or 100%.
        fitted = iso.predict(raw)
        levels, inverse = np.unique(fitted, return_inverse=True)
        n_block = np.bincount(inverse).astype(float)
        events = np.bincount(inverse, weights=y)
        smoothed = np.maximum.accumulate((events + 1) / (n_block + 2))
        knots_y = np.interp(knots_y, levels, smoothed) if len(levels) > 1 else np.full_like(knots_y, smoothed[0])
        return Calibrator("isotonic", [float(v) for v in knots_x], [float(v) for v in knots_y])
    beta = M._fit_logistic(M._logit(raw), y, np.zeros_like(raw))
    return Calibrator("sigmoid", a=float(beta[1]), b=float(beta[0]))


# --------------------------------------------------------------------------- XGBoost


def check_monotone_constraints(constraints: dict[str, int], specs: list[FeatureSpec]) -> None:
    """A constraint on a feature the model does not have is a typo, not something to skip silently."""
    numeric = {s.name for s in specs if s.dtype == "float64"}
    for name in constraints:
        if name not in numeric:
            kind = "a categorical feature" if name in {s.name for s in specs} else "not a model feature"
            raise UserError(f"params.yaml: key 'train.monotone_constraints.{name}': {kind} (see `crs featurize --list`)")


def xgb_params(cfg: TrainConfig, specs: list[FeatureSpec], seed: int) -> dict[str, Any]:
    numeric = {s.name for s in specs if s.dtype == "float64"}
    # Constraints only for present numeric features (XGBoost rejects them on categoricals).
    monotone = {k: int(v) for k, v in cfg.monotone_constraints.items() if k in numeric and v != 0}
    params: dict[str, Any] = {
        "objective": "binary:logistic",
        "eval_metric": "logloss",
        "tree_method": "hist",
        "max_depth": cfg.max_depth,
        "eta": cfg.learning_rate,
        "subsample": cfg.subsample,
        "colsample_bytree": cfg.colsample_bytree,
        "min_child_weight": cfg.min_child_weight,
        "lambda": cfg.reg_lambda,
        "seed": seed,
        "nthread": cfg.n_threads,
        "verbosity": 0,
    }
    if monotone:
        params["monotone_constraints"] = monotone
    return params


def fit_booster(X: pd.DataFrame, y: np.ndarray, cfg: TrainConfig, specs: list[FeatureSpec], seed: int):
    import xgboost as xgb

    dtrain = xgb.DMatrix(X, label=y, enable_categorical=True, nthread=cfg.n_threads)
    return xgb.train(xgb_params(cfg, specs, seed), dtrain, num_boost_round=cfg.n_estimators)


def predict_booster(booster, X: pd.DataFrame, n_threads: int) -> np.ndarray:
    import xgboost as xgb

    return booster.predict(xgb.DMatrix(X, enable_categorical=True, nthread=n_threads))


def _grouped_splits(y: np.ndarray, groups: np.ndarray, n_splits: int, seed: int) -> list[tuple]:
    """StratifiedGroupKFold splits, with n_splits reduced to what the event count allows."""
    from sklearn.model_selection import StratifiedGroupKFold

    pos_groups = len(np.unique(groups[y == 1]))
    neg_groups = len(np.unique(groups[y == 0]))
    k = min(n_splits, pos_groups, neg_groups)
    if k < 2:
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class" chatter
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        return list(splitter.split(np.zeros(len(y)), y, groups))


@dataclass
class FittedModel:
    booster: Any
    calibrator: Calibrator
    threshold: float


def inner_holdout(
    y: np.ndarray, groups: np.ndarray, cfg: TrainConfig, seed: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """Grouped, stratified split of a *training fold* into a fitting part and a calibration part
    (``calibration_fraction`` of its patients); None when there are too few events to split."""
    n_parts = max(2, round(1 / cfg.calibration_fraction))
    splits = _grouped_splits(y, groups, n_parts, seed)
    return splits[0] if splits else None


def fit_calibrated_model(
    X: pd.DataFrame, y: np.ndarray, groups: np.ndarray, cfg: TrainConfig, specs: list[FeatureSpec], seed: int
) -> FittedModel:
    """Booster + calibrator + threshold from (X, y) alone (one outer training fold).

    A booster fitted on the inner fitting part scores the held-out calibration patients; the calibrator
    and the sensitivity threshold are fitted on those scores. The returned booster is then refitted on
    all of (X, y) (the same refit-then-calibrate scheme as the final model). One inner split, not an
    inner K-fold, keeps ``make run`` within its time budget.
    """
    booster = fit_booster(X, y, cfg, specs, seed)
    split = inner_holdout(y, groups, cfg, seed + 1)
    if split is None:  # too few events for an inner split: uncalibrated, in-sample threshold
        raw = predict_booster(booster, X, cfg.n_threads)
        return FittedModel(booster, Calibrator("identity"), M.threshold_for_sensitivity(y, raw, cfg.sensitivity_target))
    fit_idx, cal_idx = split
    inner = fit_booster(X.iloc[fit_idx], y[fit_idx], cfg, specs, seed)
    raw_cal = predict_booster(inner, X.iloc[cal_idx], cfg.n_threads)
    calibrator = fit_calibrator(raw_cal, y[cal_idx], cfg.calibration)
    threshold = M.threshold_for_sensitivity(y[cal_idx], calibrator.predict(raw_cal), cfg.sensitivity_target)
    return FittedModel(booster, calibrator, threshold)


# --------------------------------------------------------------------------- baselines


def baseline_availability(df: pd.DataFrame) -> dict[str, str | None]:
    """None if available, else the reason it cannot be scored on this cohort."""
    out: dict[str, str | None] = {}
    for name, col in SCORE_BASELINES.items():
        if col not in df.columns:
            out[name] = f"column '{col}' not in landmarks.parquet"
        elif pd.to_numeric(df[col].astype("object"), errors="coerce").isna().all():
            out[name] = f"column '{col}' has no values"
        else:
            out[name] = None
    out[LOGISTIC_BASELINE] = None
    return out


def _score_transform(values: np.ndarray) -> np.ndarray:
    # arcsinh: monotone (AUROC unchanged), tames the heavy right tails of ferritin / EASIX for the
    # one-variable logistic recalibration.
    return np.arcsinh(values)


def score_baseline_fold(
    s_train: np.ndarray, y_train: np.ndarray, s_test: np.ndarray, sensitivity: float
) -> tuple[np.ndarray, float]:
    """Recalibrated probability of a raw score on the test fold, and its training-fold threshold.

    Missing scores get the training-fold median so every baseline is scored on the same rows. The
    one-variable logistic map is monotone (increasing for a risk score), so the ranking, and hence
    AUROC, is the raw score's; the threshold equals a cut-off on the raw score.
    """
    median = np.nanmedian(s_train) if np.isfinite(s_train).any() else 0.0
    z_train = _score_transform(np.where(np.isfinite(s_train), s_train, median))
    z_test = _score_transform(np.where(np.isfinite(s_test), s_test, median))
    if len(np.unique(y_train)) < 2:
        return np.full(len(s_test), float(np.mean(y_train))), math.nan
    beta = M._fit_logistic(z_train, y_train, np.zeros_like(z_train))

    def prob(z: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-np.clip(beta[0] + beta[1] * z, -30, 30)))

    p_train = prob(z_train)
    return prob(z_test), M.threshold_for_sensitivity(y_train, p_train, sensitivity)


def _logistic_pipeline(specs: list[FeatureSpec], seed: int):
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = [s.name for s in specs if s.dtype == "float64"]
    categorical = [s.name for s in specs if s.dtype == "category"]
    transformers = [
        ("num", Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]), numeric)
    ]
    if categorical:
        transformers.append(
            (
                "cat",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="constant", fill_value="missing")),
                        ("onehot", OneHotEncoder(handle_unknown="ignore")),
                    ]
                ),
                categorical,
            )
        )
    return Pipeline(
        [
            ("prep", ColumnTransformer(transformers)),
            ("lr", LogisticRegression(C=1.0, max_iter=2000, random_state=seed)),  # default penalty: L2
        ]
    )


def _logistic_frame(X: pd.DataFrame, specs: list[FeatureSpec]) -> pd.DataFrame:
    out = {}
    for s in specs:
        if s.dtype == "category":
            out[s.name] = X[s.name].astype("object").where(X[s.name].notna(), np.nan).to_numpy(dtype=object)
        else:
            out[s.name] = X[s.name].to_numpy(dtype=float)
    return pd.DataFrame(out, index=X.index)


def fit_logistic_fold(
    X_train: pd.DataFrame,
    y_train: np.ndarray,
    groups_train: np.ndarray,
    X_test: pd.DataFrame,
    cfg: TrainConfig,
    specs: list[FeatureSpec],
    seed: int,
) -> tuple[np.ndarray, float]:
    """L2 logistic regression (imputer, scaler, one-hot inside the pipeline, i.e. fitted on the training
    fold); threshold from the same inner held-out calibration patients as the model."""
    if len(np.unique(y_train)) < 2:
        return np.full(len(X_test), float(np.mean(y_train))), math.nan
    L_train, L_test = _logistic_frame(X_train, specs), _logistic_frame(X_test, specs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # empty-column imputer and convergence chatter
        pipe = _logistic_pipeline(specs, seed).fit(L_train, y_train)
        p_test = pipe.predict_proba(L_test)[:, 1]
        split = inner_holdout(y_train, groups_train, cfg, seed + 1)
        if split is None:
            return p_test, M.threshold_for_sensitivity(y_train, pipe.predict_proba(L_train)[:, 1], cfg.sensitivity_target)
        fit_idx, cal_idx = split
        inner = _logistic_pipeline(specs, seed).fit(L_train.iloc[fit_idx], y_train[fit_idx])
        p_cal = inner.predict_proba(L_train.iloc[cal_idx])[:, 1]
    return p_test, M.threshold_for_sensitivity(y_train[cal_idx], p_cal, cfg.sensitivity_target)


# --------------------------------------------------------------------------- cross-validation


def _landmark_groups(landmarks: np.ndarray, per_landmark: bool) -> list[tuple[float | None, np.ndarray]]:
    """(landmark or None, row mask) units that get their own model."""
    if not per_landmark:
        return [(None, np.ones(len(landmarks), dtype=bool))]
    return [(float(h), landmarks == h) for h in np.unique(landmarks)]


@dataclass(frozen=True)
class FoldData:
    """Everything one outer fold needs; picklable so folds can run in worker processes."""

    X: pd.DataFrame
    y: np.ndarray
    groups: np.ndarray
    landmarks: np.ndarray
    specs: list[FeatureSpec]
    available: dict[str, str | None]


def outer_splits(y: np.ndarray, groups: np.ndarray, cfg: TrainConfig) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
    """(repeat, fold, train rows, test rows): a new shuffle seed per repeat, grouped by patient."""
    out = []
    for repeat in range(cfg.n_repeats):
        splits = _grouped_splits(y, groups, cfg.n_splits, cfg.seed + 1000 * repeat)
        if not splits:
            raise UserError("too few events or non-events for cross-validation")
        out.extend((repeat, fold, tr, te) for fold, (tr, te) in enumerate(splits))
    return out


def run_fold(data: FoldData, cfg: TrainConfig, repeat: int, fold: int, tr: np.ndarray, te: np.ndarray) -> pd.DataFrame:
    """Fit model and baselines on the training rows ``tr``; predict the test rows ``te`` only."""
    from threadpoolctl import threadpool_limits

    X, y, groups, landmarks, specs = data.X, data.y, data.groups, data.landmarks, data.specs
    part = pd.DataFrame(
        {
            "row": te,
            "repeat": repeat,
            "fold": fold,
            f"raw__{MODEL}": np.nan,
            f"prob__{MODEL}": np.nan,
            f"threshold__{MODEL}": np.nan,
        }
    )
    fold_seed = cfg.seed + 1000 * repeat + fold
    # One BLAS thread: small matrices, and spinning BLAS/OpenMP threads thrash a loaded 2-core machine.
    with threadpool_limits(limits=1):
        # Model: one per landmark unit (or one for all), fitted on training-fold rows only.
        for _, mask in _landmark_groups(landmarks, cfg.per_landmark):
            tr_u, te_u = tr[mask[tr]], te[mask[te]]
            if len(te_u) == 0 or len(tr_u) == 0:
                continue
            where = mask[te]
            if len(np.unique(y[tr_u])) < 2:
                part.loc[where, f"prob__{MODEL}"] = float(np.mean(y[tr_u]))
                continue
            fitted = fit_calibrated_model(X.iloc[tr_u], y[tr_u], groups[tr_u], cfg, specs, fold_seed)
            raw = predict_booster(fitted.booster, X.iloc[te_u], cfg.n_threads)
            part.loc[where, f"raw__{MODEL}"] = raw
            part.loc[where, f"prob__{MODEL}"] = fitted.calibrator.predict(raw)
            part.loc[where, f"threshold__{MODEL}"] = fitted.threshold
        # Baselines: same rows, same folds.
        for name, col in SCORE_BASELINES.items():
            if data.available[name] is not None:
                continue
            s = X[col].to_numpy(dtype=float)
            prob, thr = score_baseline_fold(s[tr], y[tr], s[te], cfg.sensitivity_target)
            part[f"score__{name}"] = s[te]
            part[f"prob__{name}"] = prob
            part[f"threshold__{name}"] = thr
        prob, thr = fit_logistic_fold(X.iloc[tr], y[tr], groups[tr], X.iloc[te], cfg, specs, fold_seed)
    part[f"prob__{LOGISTIC_BASELINE}"] = prob
    part[f"threshold__{LOGISTIC_BASELINE}"] = thr
    return part


def run_tasks(tasks: list[tuple], cfg: TrainConfig) -> list[Any]:
    """Run ``(function, *args)`` tasks, in worker processes when ``n_jobs > 1``; results keep task order.

    Processes (not threads): each task is seeded on its own, so results do not depend on scheduling.
    """
    if cfg.n_jobs <= 1 or len(tasks) <= 1:
        return [fn(*args) for fn, *args in tasks]
    from joblib import Parallel, delayed

    return Parallel(n_jobs=min(cfg.n_jobs, len(tasks)), backend="loky")(delayed(fn)(*args) for fn, *args in tasks)


# --------------------------------------------------------------------------- main


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_landmarks(path: Path, config: Config) -> pd.DataFrame:
    df = read_stage_parquet(path, "landmark table", "crs featurize")
    for col in ("patient_id", "landmark_hours"):
        if col not in df.columns:
            raise UserError(f"{path}: required column '{col}' missing")
    return df


@dataclass
class TargetResult:
    target: str
    status: str  # "trained" or "skipped"
    reason: str | None
    oof: pd.DataFrame | None
    files: dict[str, bytes]  # relative path inside models/<target>/ -> content
    metadata: dict[str, Any]
    specs: list[FeatureSpec]
    X_all: pd.DataFrame | None
    final_boosters: dict[str, Any]


def _booster_json(booster) -> bytes:
    # XGBoost's own JSON model format; raw bytes avoid a temp file and are deterministic.
    return bytes(booster.save_raw(raw_format="json"))


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, default=_json_default) + "\n").encode()


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return None if np.isnan(value) else float(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


@dataclass
class PreparedTarget:
    target: str
    data: FoldData
    splits: list[tuple[int, int, np.ndarray, np.ndarray]]
    counts: dict[str, int]


def prepare_target(
    df: pd.DataFrame, target: str, cfg: TrainConfig, specs: list[FeatureSpec], base_meta: dict[str, Any]
) -> PreparedTarget | TargetResult:
    """Rows at risk for ``target`` and their outer folds, or a skipped result with the reason."""
    label_col = f"{LABEL_PREFIX}{target}"
    if label_col not in df.columns:
        reason = f"column '{label_col}' not in landmarks.parquet"
        return TargetResult(target, "skipped", reason, None, {}, {**base_meta, "skipped": reason}, specs, None, {})
    rows = df[df[label_col].notna()].reset_index(drop=True)  # NaN label = not at risk at that landmark
    y = rows[label_col].to_numpy(dtype=float).astype(int)
    groups = rows["patient_id"].astype(str).to_numpy()
    landmarks = rows["landmark_hours"].to_numpy(dtype=float)
    counts = {"n_rows": len(y), "n_events": int(y.sum()), "n_patients": int(len(np.unique(groups)))}
    pos_patients = len(np.unique(groups[y == 1]))
    neg_patients = len(np.unique(groups[y == 0]))
    if min(pos_patients, neg_patients) < 2:
        reason = (
            f"{pos_patients} patients with and {neg_patients} without an event: "
            "too few for grouped cross-validation"
        )
        return TargetResult(target, "skipped", reason, None, {}, {**base_meta, **counts, "skipped": reason}, specs, None, {})
    X = apply_feature_specs(rows, specs)
    data = FoldData(X, y, groups, landmarks, specs, baseline_availability(X))
    return PreparedTarget(target, data, outer_splits(y, groups, cfg), counts)


def fit_final_booster(X: pd.DataFrame, y: np.ndarray, cfg: TrainConfig, specs: list[FeatureSpec]) -> bytes:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return _booster_json(fit_booster(X, y, cfg, specs, cfg.seed))


def finish_target(
    prep: PreparedTarget,
    parts: list[pd.DataFrame],
    final_jsons: dict[str, bytes],
    config: Config,
    base_meta: dict[str, Any],
) -> TargetResult:
    """Assemble out-of-fold predictions; calibrate final boosters on pooled OOF scores; build files."""
    import xgboost as xgb

    cfg, data, target = config.train, prep.data, prep.target
    y, groups, landmarks, specs = data.y, data.groups, data.landmarks, data.specs
    oof_idx = pd.concat(parts, ignore_index=True)
    r = oof_idx.pop("row").to_numpy()
    oof = pd.concat(
        [
            pd.DataFrame(
                {
                    "patient_id": pd.array(groups[r], dtype="string"),
                    "landmark_hours": landmarks[r],
                    "target": pd.array([target] * len(r), dtype="string"),
                }
            ),
            oof_idx[["repeat", "fold"]].astype("int64"),
            pd.DataFrame({"label": y[r].astype("float64")}),
            oof_idx.drop(columns=["repeat", "fold"]),
        ],
        axis=1,
    )
    oof = oof.sort_values(["repeat", "patient_id", "landmark_hours"], kind="mergesort").reset_index(drop=True)

    files: dict[str, bytes] = {}
    units: dict[str, Any] = {}
    boosters: dict[str, Any] = {}
    for lm, mask in _landmark_groups(landmarks, cfg.per_landmark):
        key = "all" if lm is None else landmark_key(lm)
        subdir = "" if lm is None else f"landmark_{key}/"
        # Calibrator for the final booster: pooled out-of-fold raw scores of every repeat (each row
        # appears n_repeats times with equal weight); the test folds never saw their own labels.
        pooled = oof if lm is None else oof[oof["landmark_hours"] == lm]
        pooled = pooled[pooled[f"raw__{MODEL}"].notna()]
        raw, labels = pooled[f"raw__{MODEL}"].to_numpy(), pooled["label"].to_numpy()
        calibrator = fit_calibrator(raw, labels, cfg.calibration)
        threshold = M.threshold_for_sensitivity(labels, calibrator.predict(raw), cfg.sensitivity_target)
        files[f"{subdir}booster.json"] = final_jsons[key]
        files[f"{subdir}calibrator.json"] = _json_bytes(calibrator.to_json())
        booster = xgb.Booster()
        booster.load_model(bytearray(final_jsons[key]))
        boosters[key] = (booster, calibrator)
        units[key] = {
            "booster": f"{subdir}booster.json",
            "calibrator": f"{subdir}calibrator.json",
            "threshold": threshold,
            "n_rows": int(mask.sum()),
            "n_events": int(y[mask].sum()),
        }
    files["features.json"] = _json_bytes({"features": [s.to_json() for s in specs]})
    metadata = {
        **base_meta,
        "target_definition": config.targets[target].model_dump(),
        **prep.counts,
        "landmarks_hours": [float(h) for h in np.unique(landmarks)],
        "horizon_hours": config.featurize.horizon_hours,
        "per_landmark": cfg.per_landmark,
        "models": units,
        "threshold_rule": f"highest calibrated probability with sensitivity >= {cfg.sensitivity_target:g} "
        "on pooled out-of-fold predictions (flag if probability >= threshold)",
        "calibration": f"{cfg.calibration}, fitted on pooled out-of-fold raw booster scores",
        "baselines": {
            name: ({"available": True} if reason is None else {"available": False, "reason": reason})
            for name, reason in data.available.items()
        },
        # n_jobs is left out: an execution setting that does not change any output byte.
        "params": json.loads(cfg.model_dump_json(exclude={"n_jobs"})),
        "xgboost_params": {k: v for k, v in xgb_params(cfg, specs, cfg.seed).items() if k != "verbosity"},
    }
    files["metadata.json"] = _json_bytes(metadata)
    return TargetResult(target, "trained", None, oof, files, metadata, specs, data.X, boosters)


def _empty_oof() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "patient_id": pd.array([], dtype="string"),
            "landmark_hours": np.array([], dtype=float),
            "target": pd.array([], dtype="string"),
            "repeat": np.array([], dtype="int64"),
            "fold": np.array([], dtype="int64"),
            "label": np.array([], dtype=float),
        }
    )


def main(config: Config) -> None:
    import time

    started = time.perf_counter()
    cfg = config.train
    landmarks_path = Path(config.featurize.output_path)
    df = load_landmarks(landmarks_path, config)
    features = feature_columns(df)
    if not features:
        raise UserError(f"{landmarks_path}: no feature columns")
    specs = build_feature_specs(df, features)
    check_monotone_constraints(cfg.monotone_constraints, specs)
    provenance = {
        "data_path": str(landmarks_path),
        "data_sha256": sha256_file(landmarks_path),
        "cohort_path": str(config.cohort.path),
        "git_commit": tracking.git_commit(),
    }

    prepared: dict[str, PreparedTarget | TargetResult] = {
        t: prepare_target(df, t, cfg, specs, {"target": t, **provenance}) for t in config.targets
    }
    # One task list over every target, outer fold and final fit, so all workers stay busy.
    tasks: list[tuple] = []
    keys: list[tuple[str, str, Any]] = []
    for t, prep in prepared.items():
        if not isinstance(prep, PreparedTarget):
            continue
        for repeat, fold, tr, te in prep.splits:
            tasks.append((run_fold, prep.data, cfg, repeat, fold, tr, te))
            keys.append((t, "fold", (repeat, fold)))
        for lm, mask in _landmark_groups(prep.data.landmarks, cfg.per_landmark):
            key = "all" if lm is None else landmark_key(lm)
            tasks.append((fit_final_booster, prep.data.X[mask], prep.data.y[mask], cfg, specs))
            keys.append((t, "final", key))
    outputs = run_tasks(tasks, cfg)

    results: list[TargetResult] = []
    for t, prep in prepared.items():
        if isinstance(prep, TargetResult):
            print(f"train: {t}: skipped ({prep.reason})")
            results.append(prep)
            continue
        parts = [o for (tt, kind, _), o in zip(keys, outputs, strict=True) if tt == t and kind == "fold"]
        finals = {k: o for (tt, kind, k), o in zip(keys, outputs, strict=True) if tt == t and kind == "final"}
        res = finish_target(prep, parts, finals, config, {"target": t, **provenance})
        m = res.metadata
        print(f"train: {t}: {m['n_rows']} rows, {m['n_events']} events, {m['n_patients']} patients")
        results.append(res)

    oofs = [r.oof for r in results if r.oof is not None]
    write_parquet(pd.concat(oofs, ignore_index=True) if oofs else _empty_oof(), OOF_PATH)
    with atomic_dir(MODELS_DIR) as tmp:
        for res in results:
            target_dir = tmp / res.target
            target_dir.mkdir(parents=True)
            files = res.files or {"metadata.json": _json_bytes(res.metadata)}
            for rel, content in files.items():
                path = target_dir / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content)
    ml_seconds = time.perf_counter() - started
    print(f"train: cross-validation and final fits took {ml_seconds:.1f} s ({len(tasks)} tasks, n_jobs={cfg.n_jobs})")

    runs = log_training_runs(config, results, provenance)
    write_json(runs, RUNS_PATH)
    # The scoring pipeline as the pyfunc model `crs-severe-risk` (docs/predict.md); a failure is a UserError.
    from pipeline.registry_model import register_from_train

    register_from_train(config, runs, MODELS_DIR)
    print(f"train: total {time.perf_counter() - started:.1f} s (MLflow: {tracking.tracking_uri()})")


# --------------------------------------------------------------------------- MLflow


def feature_summary(X: pd.DataFrame, specs: list[FeatureSpec]) -> pd.DataFrame:
    """Per-feature aggregates logged as the MLflow dataset (never raw patient rows)."""
    records = []
    for s in specs:
        col = X[s.name]
        rec: dict[str, Any] = {"feature": s.name, "dtype": s.dtype, "missing_fraction": float(col.isna().mean())}
        if s.dtype == "float64":
            vals = col.dropna().to_numpy(dtype=float)
            q = np.quantile(vals, [0.05, 0.5, 0.95]) if len(vals) else [np.nan] * 3
            rec.update({"mean": float(np.mean(vals)) if len(vals) else np.nan, "p05": q[0], "p50": q[1], "p95": q[2]})
            rec["n_categories"] = 0
        else:
            rec.update({"mean": np.nan, "p05": np.nan, "p50": np.nan, "p95": np.nan})
            rec["n_categories"] = len(s.categories)
        records.append(rec)
    return pd.DataFrame.from_records(records)


def input_example(X: pd.DataFrame, specs: list[FeatureSpec]) -> pd.DataFrame:
    """One synthetic row: the median of each numeric feature, the most common category otherwise."""
    row: dict[str, Any] = {}
    for s in specs:
        col = X[s.name]
        if s.dtype == "float64":
            row[s.name] = [float(col.median()) if col.notna().any() else np.nan]
        else:
            mode = col.mode(dropna=True)
            value = str(mode.iloc[0]) if len(mode) else None
            row[s.name] = pd.Categorical([value], categories=list(s.categories))
    return pd.DataFrame(row)


def log_training_runs(config: Config, results: list[TargetResult], provenance: dict[str, Any]) -> dict[str, Any]:
    import mlflow

    with tracking.quiet_mlflow():
        experiment_id = tracking.setup(config.train.experiment_name)
        tags = {
            "git_commit": provenance["git_commit"],
            "cohort_path": provenance["cohort_path"],
            "data_sha256": provenance["data_sha256"],
            "stage": "train",
        }
        params = tracking.flatten(
            {
                "train": json.loads(config.train.model_dump_json()),
                "landmarks_hours": config.landmarks_hours,
                "featurize.horizon_hours": config.featurize.horizon_hours,
            }
        )
        runs: dict[str, Any] = {"tracking_uri": tracking.tracking_uri(), "experiment_id": experiment_id}
        with mlflow.start_run(run_name="train", tags=tags) as parent:
            runs["parent_run_id"] = parent.info.run_id
            mlflow.log_params(params)
            runs["targets"] = {}
            for res in results:
                with mlflow.start_run(run_name=res.target, nested=True, tags={**tags, "target": res.target}) as child:
                    runs["targets"][res.target] = child.info.run_id
                    _log_target(res, params)
    return runs


def _log_target(res: TargetResult, params: dict[str, str]) -> None:
    import mlflow
    import mlflow.xgboost
    from mlflow.models import infer_signature

    target_def = res.metadata.get("target_definition", {})
    mlflow.log_params({**params, **tracking.flatten({"target": target_def})})
    if res.status == "skipped":
        mlflow.set_tag("skipped", res.reason or "")
        return
    m = res.metadata
    mlflow.log_metrics({"n_rows": m["n_rows"], "n_events": m["n_events"], "n_patients": m["n_patients"]})
    summary = feature_summary(res.X_all, res.specs)
    dataset = mlflow.data.from_pandas(
        summary, source=m["data_path"], name=f"landmarks-summary-{res.target}", digest=m["data_sha256"][:16]
    )
    mlflow.log_input(dataset, context="training")
    for rel, content in res.files.items():
        mlflow.log_text(content.decode(), f"model_files/{rel}")
    example = input_example(res.X_all, res.specs)
    target_dir = MODELS_DIR / res.target
    for key, (booster, calibrator) in res.final_boosters.items():
        raw = predict_booster(booster, example, 1)
        signature = infer_signature(example, calibrator.predict(raw))
        unit = res.metadata["models"][key]
        # The MLflow model is the booster in XGBoost's native flavour (raw scores); the calibrator and
        # feature list travel with it as extra files (see docs/training.md for scoring).
        mlflow.xgboost.log_model(
            booster,
            name="model" if key == "all" else f"model_landmark_{key}",
            signature=signature,
            input_example=example,
            model_format="json",
            pip_requirements=["xgboost", "pandas"],
            extra_files=[str(target_dir / unit["calibrator"]), str(target_dir / "features.json")],
            metadata={"threshold": unit["threshold"], "calibration": res.metadata["calibration"]},
        )
