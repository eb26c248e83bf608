"""The top SHAP drivers of one scored row, with values and descriptions a clinician can read."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from features import feature_table
from pipeline.model import FeatureSpec
from pipeline.registry import load_registry

DRIVER_COLUMNS = ["feature", "value", "shap", "direction", "analyte", "unit", "description"]


@functools.cache
def feature_descriptions(analytes: tuple[str, ...], static: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """Feature name -> its row of :func:`features.feature_table` (analyte, unit, description)."""
    table = feature_table(analytes, static, load_registry().canonical_units)
    return {row["name"]: row for row in table.to_dict("records")}


def top_drivers(
    shap_row: np.ndarray,
    values: np.ndarray,
    specs: Sequence[FeatureSpec],
    n: int,
    descriptions: Mapping[str, Mapping[str, str]],
) -> pd.DataFrame:
    """The ``n`` features with the largest |SHAP| (log-odds) for one row, with their values."""
    order = np.argsort(-np.abs(shap_row), kind="stable")[:n]
    rows = []
    for j in order:
        spec = specs[j]
        value: Any = values[j]
        if spec.dtype == "category":
            value = None if math.isnan(value) else spec.categories[int(value)]
        info = descriptions.get(spec.name, {})
        rows.append((spec.name, value, float(shap_row[j]),
                     "pushes the estimate up" if shap_row[j] > 0 else "pushes the estimate down",
                     info.get("analyte", ""), info.get("unit", ""), info.get("description", "")))
    # Column by column (what the records constructor infers per column, without its per-row dict work).
    if not rows:
        return pd.DataFrame([], columns=DRIVER_COLUMNS)
    return pd.DataFrame({name: list(cells) for name, cells in zip(DRIVER_COLUMNS, zip(*rows, strict=True), strict=True)})
