"""Feature specs: the model matrix's column order, dtypes and category lists, fixed at training.

A spec list travels with every trained model (``features.json``) so scoring builds exactly the matrix
training saw: same order, same categories (an unseen category or an absent feature is missing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd


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

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FeatureSpec:
        return cls(data["name"], data["dtype"], tuple(data.get("categories", ())))


def build_feature_specs(df: pd.DataFrame, columns: list[str]) -> list[FeatureSpec]:
    """Specs for ``columns`` of ``df``: numbers and booleans as float64, everything else categorical."""
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


def matrix_values(X: pd.DataFrame) -> np.ndarray:
    """float64 array of a model matrix (:func:`apply_feature_specs` output): numbers as such, categories as
    their index in the spec's list (missing: NaN). What the boosters are trained and scored on: a plain
    numeric matrix, so XGBoost has no per-round feature-name bookkeeping (that cost more than the trees
    on a few hundred features) and categories are ordinal codes in a fixed, sorted order."""
    out = np.empty((len(X), X.shape[1]), dtype=np.float64)
    is_category = np.array([isinstance(dtype, pd.CategoricalDtype) for dtype in X.dtypes], dtype=bool)
    numeric = np.flatnonzero(~is_category)
    if len(numeric):  # one block copy instead of one pandas call per column (hundreds of features)
        out[:, numeric] = X.iloc[:, numeric].to_numpy(dtype=np.float64, na_value=np.nan)
    for j in np.flatnonzero(is_category):
        codes = X.iloc[:, j].cat.codes.to_numpy()
        out[:, j] = np.where(codes < 0, np.nan, codes)
    return out


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
