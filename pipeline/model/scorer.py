"""The scorer: landmark rows in, calibrated risk, log-odds margin and exact tree SHAP out, in one pass.

One place that turns a landmark feature frame into the numbers a clinician sees, used by explain,
report, predict and the MLflow pyfunc model, so all of them agree to the last digit.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.cohort import is_missing_value
from pipeline.config import landmark_key
from pipeline.errors import UserError
from pipeline.model.calibration import Calibrator, expit, logit
from pipeline.model.linear import LinearModel
from pipeline.model.specs import FeatureSpec, apply_feature_specs

BAND_LOW, BAND_INTERMEDIATE, BAND_HIGH = "low", "intermediate", "high"


@dataclass
class LandmarkModel:
    """The deployed unit (for all landmarks, or one when trained ``per_landmark``): K cross-fitted
    boosters whose log-odds are averaged (blended with K cross-fitted simple-summaries boosters at
    ``simple_weight``, then with K cross-fitted L2 logistic models at ``linear_weight``, when the
    procedure chose to), the calibrator fitted on their held-out scores, and
    alert thresholds (per landmark hours, and pooled). Training's out-of-fold predictions come from this
    same class, so what is validated is what is deployed. ``X``: the float64 model matrix (spec order)."""

    boosters: list[Any]  # xgboost.Booster, each trained on K-1 of K patient folds
    calibrator: Calibrator
    threshold: float | None
    thresholds: dict[float, float] = field(default_factory=dict)
    linear: list[LinearModel] = field(default_factory=list)
    linear_weight: float = 0.0
    #: Boosters on the simple summaries only (the other columns were missing when they were trained).
    simple: list[Any] = field(default_factory=list)
    simple_weight: float = 0.0

    def _trees(self, dmatrix: Any, **output: bool) -> np.ndarray:
        """(1 - s) x mean of the boosters' + s x mean of the simple boosters' margins (or contributions)."""
        trees = np.mean([b.predict(dmatrix, **output).astype(np.float64) for b in self.boosters], axis=0)
        if not self.simple:
            return trees
        simple = np.mean([b.predict(dmatrix, **output).astype(np.float64) for b in self.simple], axis=0)
        return (1 - self.simple_weight) * trees + self.simple_weight * simple

    def margin(self, X: np.ndarray, dmatrix: Any = None) -> np.ndarray:
        """Log-odds: (1 - w) x the trees' (:meth:`_trees`) + w x mean of the linear models' (float64).
        ``dmatrix``: ``X`` already as an XGBoost DMatrix (built once for margin and contributions)."""
        dmatrix = _dmatrix(X) if dmatrix is None else dmatrix
        trees = self._trees(dmatrix, output_margin=True)
        if not self.linear:
            return trees
        linear = np.mean([m.logit(X) for m in self.linear], axis=0)
        return (1 - self.linear_weight) * trees + self.linear_weight * linear

    def contributions(self, X: np.ndarray, dmatrix: Any = None) -> np.ndarray:
        """Exact contributions (rows x features + bias column), blended like :meth:`margin` (Shapley values
        are linear in the model), so each row sums to :meth:`margin`."""
        dmatrix = _dmatrix(X) if dmatrix is None else dmatrix
        trees = self._trees(dmatrix, pred_contribs=True)
        if not self.linear:
            return trees
        linear = np.mean([m.contributions(X, X.shape[1]) for m in self.linear], axis=0)
        return (1 - self.linear_weight) * trees + self.linear_weight * linear

    def probability(self, margin: np.ndarray, landmark_hours: np.ndarray) -> np.ndarray:
        return self.calibrator.predict(expit(margin), landmark_hours)

    def threshold_at(self, landmark_hours: np.ndarray) -> np.ndarray:
        """Alert threshold per row: its landmark's own, else the pooled one."""
        hours = np.asarray(landmark_hours, dtype=float)
        pooled = np.nan if self.threshold is None else float(self.threshold)
        return np.array([self.thresholds.get(float(h), pooled) for h in hours], dtype=float)


@dataclass
class Scores:
    probability: np.ndarray  # calibrated
    margin: np.ndarray  # booster log-odds before calibration
    base_value: np.ndarray  # SHAP expected value (log-odds), per row
    shap: np.ndarray | None  # (rows, features) log-odds contributions


@dataclass(frozen=True)
class _MatrixPlan:
    """:meth:`TargetModel.matrix_array`'s column plan for one layout of the landmark frame."""

    float_specs: np.ndarray  # spec positions of the float64 columns
    float_names: list[str]  # their names
    float_columns: np.ndarray | None  # their positions in the frame (None: repeated column names, by label)
    others: list[tuple[int, FeatureSpec]]  # present specs that need converting (categories, other dtypes)

    @classmethod
    def of(cls, specs: list[FeatureSpec], columns: list[Any], dtypes: pd.Series) -> _MatrixPlan:
        unique = dtypes.index.is_unique
        # A plain dict (unique column names, as featurize gives): a Series lookup per spec cost ~2 ms.
        dtype_of = dict(zip(columns, dtypes.tolist(), strict=True)) if unique else None
        present = dtype_of.__contains__ if dtype_of is not None else dtypes.index.__contains__
        dtype = dtype_of.__getitem__ if dtype_of is not None else dtypes.__getitem__
        fast = [(j, s.name) for j, s in enumerate(specs)
                if s.dtype != "category" and present(s.name) and dtype(s.name) == np.float64]
        position = {name: i for i, name in enumerate(columns)}
        done = {j for j, _ in fast}
        return cls(np.array([j for j, _ in fast], dtype=np.intp), [n for _, n in fast],
                   np.array([position[n] for _, n in fast], dtype=np.intp) if unique else None,
                   [(j, s) for j, s in enumerate(specs) if j not in done and present(s.name)])


@dataclass
class TargetModel:
    target: str
    specs: list[FeatureSpec]
    metadata: dict
    #: "all" or a landmark key ("48") -> model
    models: dict[str, LandmarkModel]
    run_id: str | None = None

    @property
    def feature_names(self) -> list[str]:
        return [s.name for s in self.specs]

    def matrix(self, landmarks: pd.DataFrame) -> pd.DataFrame:
        """The model matrix as a typed frame (categoricals as pandas categories), as in training."""
        return apply_feature_specs(landmarks, self.specs)

    def matrix_array(self, landmarks: pd.DataFrame) -> np.ndarray:
        """float64 matrix in feature order: numbers as such, categories as their index in the trained
        list; an unseen category or an absent feature is missing (NaN). Same values XGBoost sees from
        :meth:`matrix` (tests assert bit-identical scores), without per-column pandas work."""
        X = np.full((len(landmarks), len(self.specs)), np.nan)
        plan = self._matrix_plan(landmarks)
        if plan.float_specs.size:  # by position: selecting ~400 columns by label cost ~1-2 ms
            floats = (landmarks.iloc[:, plan.float_columns] if plan.float_columns is not None
                      else landmarks[plan.float_names])
            X[:, plan.float_specs] = floats.to_numpy(dtype=np.float64)
        for j, spec in plan.others:
            column = landmarks[spec.name]
            if spec.dtype == "category":
                X[:, j] = _category_codes(column, spec.categories)
            else:
                X[:, j] = pd.to_numeric(column.astype(object), errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        return X

    def _matrix_plan(self, landmarks: pd.DataFrame) -> _MatrixPlan:
        """Which specs are float64 columns of ``landmarks`` (and where), which need converting: worked out
        once per column layout (names, and which columns are float64: all a plan depends on; categorical
        columns are read at run time whatever their categories), which every request of a model shares
        (walking ~400 specs per request cost ~0.3 ms). Thread-safe: a plan is only ever added whole."""
        dtypes = landmarks.dtypes
        columns = dtypes.index.tolist()  # iterating an Arrow-backed Index cell by cell is slow
        key = (tuple(columns), tuple(d == np.float64 for d in dtypes.tolist()))
        cache = self.__dict__.setdefault("_matrix_plans", {})
        plan = cache.get(key)
        if plan is None:
            if len(cache) >= 16:
                cache.clear()
            plan = cache[key] = _MatrixPlan.of(self.specs, columns, dtypes)
        return plan

    def _groups(self, hours: np.ndarray) -> list[tuple[LandmarkModel, np.ndarray]]:
        if "all" in self.models:
            return [(self.models["all"], np.arange(len(hours)))]
        out = []
        covered = np.zeros(len(hours), dtype=bool)
        for key, model in self.models.items():
            rows = np.flatnonzero(np.isclose(hours, float(key)))
            if rows.size:
                out.append((model, rows))
                covered[rows] = True
        if not covered.all():
            missing = sorted({f"{h:g}" for h in hours[~covered]})
            raise UserError(
                f"{self.target}: model was trained per landmark; no model for landmark hours {', '.join(missing)}"
            )
        return out

    def score(self, landmarks: pd.DataFrame, with_shap: bool = True) -> Scores:
        """Calibrated probability, log-odds margin and (optionally) exact SHAP in one pass."""
        return self.score_array(
            self.matrix_array(landmarks), landmarks["landmark_hours"].to_numpy(dtype=float), with_shap
        )

    def score_array(self, X: np.ndarray, landmark_hours: np.ndarray, with_shap: bool = True) -> Scores:
        """:meth:`score` on a prebuilt :meth:`matrix_array` (the per-patient hot path)."""

        n = len(X)
        scores = Scores(
            probability=np.full(n, np.nan),
            margin=np.full(n, np.nan),
            base_value=np.full(n, np.nan),
            shap=np.zeros((n, len(self.specs))) if with_shap else None,
        )
        if n == 0:
            return scores
        for model, rows in self._groups(np.asarray(landmark_hours, dtype=float)):
            hours = np.asarray(landmark_hours, dtype=float)[rows]
            X_rows = X[rows]
            dmatrix = _dmatrix(X_rows)  # once for the margin and the SHAP values
            scores.margin[rows] = margin = model.margin(X_rows, dmatrix)
            scores.probability[rows] = probability = self.recalibrated(model.probability(margin, hours))
            if not np.all((probability >= 0) & (probability <= 1)):  # NaN fails too; checked at load as well
                raise UserError(f"{self.target}: the calibrator gave a probability outside [0, 1]; "
                                "the model files are damaged (rerun `crs train`)")
            if with_shap:
                contribs = model.contributions(X_rows, dmatrix)
                scores.shap[rows] = contribs[:, :-1]
                scores.base_value[rows] = contribs[:, -1]
        return scores

    def recalibrated(self, probability: np.ndarray) -> np.ndarray:
        """A local recalibration (``crs validate --recalibrate``, metadata ``recalibration``: intercept a and
        slope b > 0) maps p to expit(a + b logit(p)); the booster and its calibrator are untouched."""
        update = self.metadata.get("recalibration")
        if not update:
            return probability
        return expit(update["intercept"] + update["slope"] * logit(probability))

    def threshold_array(self, landmark_hours: np.ndarray) -> np.ndarray:
        """The validated alert threshold per row (its landmark's, else pooled), on the scale of
        :meth:`score_array`'s probabilities (recalibrated too, so the same patients are flagged)."""
        hours = np.asarray(landmark_hours, dtype=float)
        out = np.full(len(hours), np.nan)
        for model, rows in self._groups(hours):
            out[rows] = model.threshold_at(hours[rows])
        return self.recalibrated(out)

    def band_cutoffs(self, landmark_hours: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Per row, the validated band cut-offs (low below, high from) at its landmark, else the pooled
        ones, on the scale of the (recalibrated) probabilities; None for models trained without them."""
        bands = self.metadata.get("bands")
        if not bands:
            return None
        hours = np.asarray(landmark_hours, dtype=float)
        keys = [landmark_key(float(h)) for h in hours]
        cut = [bands["by_landmark"].get(k, bands["pooled"]) for k in keys]
        low = np.array([np.nan if c["low_below"] is None else c["low_below"] for c in cut], dtype=float)
        high = np.array([np.nan if c["high_from"] is None else c["high_from"] for c in cut], dtype=float)
        return self.recalibrated(low), self.recalibrated(high)

    def margin(self, landmarks: pd.DataFrame) -> np.ndarray:
        """Raw booster output in log-odds (before calibration)."""
        return self.score(landmarks, with_shap=False).margin

    def predict(self, landmarks: pd.DataFrame) -> np.ndarray:
        """Calibrated probability of the target within the horizon, per landmark row."""
        return self.score(landmarks, with_shap=False).probability

    def shap(self, landmarks: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
        """Exact tree SHAP values in log-odds (XGBoost ``pred_contribs``) and the base value per row.

        Rows align with ``landmarks``; columns are the model's features. For each row
        ``base + values.sum()`` equals :meth:`margin` (up to float32 rounding).
        """
        scores = self.score(landmarks)
        return pd.DataFrame(scores.shap, columns=self.feature_names, index=landmarks.index), scores.base_value


def _dmatrix(X: np.ndarray) -> Any:
    import xgboost as xgb

    return xgb.DMatrix(X, nthread=1)  # plain numeric matrix in spec order, as in training


def _category_codes(column: pd.Series, categories: tuple[str, ...]) -> np.ndarray:
    """Index of each value's text in the trained ``categories`` (float; NaN: missing or unseen), looked up
    once per distinct value (a categorical column: once per category)."""
    lookup = _category_lookup(categories)
    if isinstance(column.dtype, pd.CategoricalDtype):  # categories are never missing values
        categorical = column.array  # its codes and categories directly (``.cat`` builds Series: ~15 us each)
        mapped = np.array([lookup.get(str(c), np.nan) for c in categorical.categories], dtype=float)
        codes = np.asarray(categorical.codes)
        return np.where(codes >= 0, mapped[np.maximum(codes, 0)] if mapped.size else np.nan, np.nan)
    codes, uniques = pd.factorize(column.astype(object).to_numpy(), use_na_sentinel=False)
    mapped = np.array([np.nan if is_missing_value(v) else lookup.get(str(v), np.nan) for v in uniques], dtype=float)
    return mapped[codes] if len(codes) else np.zeros(0)


@functools.cache
def _category_lookup(categories: tuple[str, ...]) -> dict[str, float]:
    return {c: float(i) for i, c in enumerate(categories)}


@dataclass
class ModelBundle:
    """Every target's model from a ``models/`` directory, plus MLflow run ids when known."""

    directory: Path
    targets: dict[str, TargetModel] = field(default_factory=dict)
    runs: dict = field(default_factory=dict)

    @property
    def analytes(self) -> list[str] | None:
        """The analytes the models were trained on (recorded by ``crs train``), or None if not recorded."""
        for model in self.targets.values():
            if model.metadata.get("analytes") is not None:
                return list(model.metadata["analytes"])
        return None


def risk_band(probability: np.ndarray, low_below: float | np.ndarray, high_from: float | np.ndarray) -> np.ndarray:
    """low (< low_below), intermediate, or high (>= high_from); missing probability -> ''. The cut-offs
    may be per row (validated bands differ by target and landmark)."""
    p = np.asarray(probability, dtype=float)
    band = np.where(p >= high_from, BAND_HIGH, np.where(p < low_below, BAND_LOW, BAND_INTERMEDIATE))
    return np.where(np.isnan(p), "", band).astype(object)
