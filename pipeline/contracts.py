"""Column names and stage-to-stage schemas: the one home of what one stage writes and the next reads.

Prefixes are spelled here once; every module builds names through these helpers. Each intermediate
file has a pandera schema that the reading stage checks (:func:`check_frame`), so a damaged or stale
file fails with one line naming the file and the column, not a traceback three stages later.
Docs: docs/CONTRACTS.md.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pandera.pandas as pa

from pipeline.errors import UserError

PATIENT_ID = "patient_id"
LANDMARK_HOURS = "landmark_hours"
HOURS_SINCE_ANCHOR = "hours_since_anchor"

# Landmark table (featurize output): labels and onset hours are never model features.
LABEL_PREFIX = "label__"
ONSET_PREFIX = "onset_hours__"
# Grouping columns carried for validation only (e.g. "group__site" for leave-one-site-out), never features.
GROUP_PREFIX = "group__"
SITE_GROUP = f"{GROUP_PREFIX}site"
# Out-of-fold table (train output): one column group per scored model ("model" or a baseline).
RAW_PREFIX = "raw__"
PROB_PREFIX = "prob__"
THRESHOLD_PREFIX = "threshold__"
SCORE_PREFIX = "score__"
MODEL = "model"
# Explanations (explain output): one SHAP column per model feature.
SHAP_PREFIX = "shap__"
# Per-analyte features: "<stem>__<summary>"; the stem rule is the feature library's
# (features.definitions.analyte_feature_name / feature_stem), the one place that names features.
ANALYTE_SEPARATOR = "__"
ID_COLUMNS = (PATIENT_ID,)


def label_column(target: str) -> str:
    return f"{LABEL_PREFIX}{target}"


def onset_column(target: str) -> str:
    return f"{ONSET_PREFIX}{target}"


def prob_column(model: str) -> str:
    return f"{PROB_PREFIX}{model}"


def raw_column(model: str) -> str:
    return f"{RAW_PREFIX}{model}"


def threshold_column(model: str) -> str:
    return f"{THRESHOLD_PREFIX}{model}"


def score_column(model: str) -> str:
    return f"{SCORE_PREFIX}{model}"


def shap_column(feature: str) -> str:
    return f"{SHAP_PREFIX}{feature}"


def shap_features(columns: list[str] | pd.Index) -> list[str]:
    """Feature names of the ``shap__*`` columns, in column order."""
    return [c[len(SHAP_PREFIX):] for c in columns if c.startswith(SHAP_PREFIX)]


#: The per-analyte summaries of the simple-summaries reference: last, first, max and log(last/first).
SIMPLE_SUMMARIES = ("latest", "first", "max", "log2_latest_over_first")


def simple_summary_columns(columns: list[str] | pd.Index) -> list[str]:
    """The simple-summaries feature set, in table order: per analyte (any stem with a ``<stem>__count``
    column, which derived scores such as ``easix__latest`` lack) its latest, first, max and
    log2(latest/first), plus every column without ``__`` (static covariates, ``landmark_hours``)."""
    stems = {c[: -len("__count")] for c in columns if c.endswith("__count")}
    wanted = {f"{stem}{ANALYTE_SEPARATOR}{summary}" for stem in stems for summary in SIMPLE_SUMMARIES}
    return [c for c in columns if c in wanted or ANALYTE_SEPARATOR not in c]


def feature_columns(columns: list[str] | pd.Index) -> list[str]:
    """Model features of a landmark table: everything but ids, labels, onset hours and grouping columns."""
    return [
        c for c in columns
        if c not in ID_COLUMNS and not c.startswith((LABEL_PREFIX, ONSET_PREFIX, GROUP_PREFIX))
    ]


# ----------------------------------------------------------------------------- file schemas


#: ``data/processed/landmarks.parquet`` (featurize -> train, explain, report).
LANDMARKS = pa.DataFrameSchema(
    {
        PATIENT_ID: pa.Column(nullable=False),
        LANDMARK_HOURS: pa.Column(float, nullable=False),
        f"{LABEL_PREFIX}.+": pa.Column(float, nullable=True, regex=True, required=False),
        f"{ONSET_PREFIX}.+": pa.Column(float, nullable=True, regex=True, required=False),
    },
    name="landmark table",
)

#: ``data/processed/oof.parquet`` (train -> evaluate, report).
OOF = pa.DataFrameSchema(
    {
        PATIENT_ID: pa.Column(nullable=False),
        LANDMARK_HOURS: pa.Column(float, nullable=False),
        "target": pa.Column(nullable=False),
        "repeat": pa.Column(int, nullable=False),
        "fold": pa.Column(int, nullable=False),
        "label": pa.Column(float, pa.Check.isin([0.0, 1.0]), nullable=False),
        f"{PROB_PREFIX}.+": pa.Column(float, nullable=True, regex=True, required=False),
    },
    name="out-of-fold predictions",
)

#: ``reports/shap/<target>.parquet`` (explain -> report).
EXPLANATIONS = pa.DataFrameSchema(
    {
        PATIENT_ID: pa.Column(nullable=False),
        LANDMARK_HOURS: pa.Column(float, nullable=False),
        "base_value": pa.Column(float, nullable=True),
        "margin": pa.Column(float, nullable=True),
        "probability": pa.Column(float, nullable=True),
        f"{SHAP_PREFIX}.+": pa.Column(float, nullable=True, regex=True, required=False),
    },
    name="explanations",
)

#: ``data/interim/measurements.parquet`` (ingest -> featurize, report).
MEASUREMENTS = pa.DataFrameSchema(
    {
        PATIENT_ID: pa.Column(nullable=False),
        HOURS_SINCE_ANCHOR: pa.Column(float, nullable=False),
        "analyte": pa.Column(nullable=False),
        "value": pa.Column(float, nullable=True),
    },
    name="measurements",
)


def check_frame(frame: pd.DataFrame, schema: pa.DataFrameSchema, path: str | Path, producer: str) -> pd.DataFrame:
    """``frame`` if it satisfies ``schema``; else one line naming the file, the column and the stage to rerun.

    Only column presence and dtypes are checked per column (cheap even on millions of rows); cell values
    never appear in the message.
    """
    for name, column in schema.columns.items():
        if not column.regex and column.required and name not in frame.columns:
            raise UserError(f"{path}: {schema.name}: column '{name}' missing (damaged or stale; rerun `{producer}`)")
    try:
        return schema.validate(frame, lazy=False)
    except (pa.errors.SchemaError, pa.errors.SchemaErrors) as exc:
        column = getattr(exc, "column_name", None) or getattr(getattr(exc, "schema", None), "name", None)
        reason = getattr(exc, "reason_code", None)
        what = f"column '{column}'" if column else "table"
        why = str(reason.name).lower().replace("_", " ") if reason is not None else "does not match its schema"
        raise UserError(
            f"{path}: {schema.name}: {what}: {why} (damaged or stale; rerun `{producer}`)"
        ) from None
