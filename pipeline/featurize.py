"""``crs featurize``: ingest tables -> ``data/processed/landmarks.parquet`` (features + labels).

``run`` is pure (tables in, frame out) and goes through :class:`features.LandmarkFeaturizer`, the
same code path a notebook uses; ``main`` does the reading and the atomic writing. With
``featurize.analytes: auto`` the analytes are chosen from the measurements at featurize time: the
choice (coverage, and the analytes left out with reasons) goes to ``paths.feature_set`` and the list
travels with the landmark table as ``frame.attrs["analytes"]`` (kept in the parquet file).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features import SUMMARIES, LandmarkFeaturizer, feature_table
from features.covariates import model_covariates
from features.definitions import analyte_feature_name
from features.errors import FeatureError
from features.landmarks import CENSORED_ABOVE, CENSORED_BELOW, censoring_codes, patient_index
from pipeline import contracts
from pipeline.config import Config, landmark_key
from pipeline.errors import UserError
from pipeline.io import read_stage_parquet, write_json, write_parquet
from pipeline.memory import reuse_freed_memory, small_pages
from pipeline.registry import load_registry
from pipeline.validation.drift import MeasurementStats, feature_summary, measurement_stats

REQUIRED_TABLES = ("patients", "measurements")
OPTIONAL_TABLES = ("events", "treatments")
#: ``frame.attrs`` key holding the analytes the landmark table was built on.
ANALYTES_ATTR = "analytes"
#: ``frame.attrs`` key holding the covariate reference (tumour-burden scales) it was built with.
REFERENCE_ATTR = "covariate_reference"
#: ``frame.attrs`` key holding the training cohort's feature summary (drift reference, no patient rows).
SUMMARY_ATTR = "training_summary"


def featurize(config: Config, tables: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, LandmarkFeaturizer]:
    """The landmark matrix (``attrs["analytes"]`` set) and the fitted featurizer (its analyte choice)."""
    # The drift summary's measurement statistics need only the input tables: a second thread computes
    # them while the landmark table's serial steps (analyte choice, encoding) keep one core busy.
    # Huge pages off, as in ingest: at 100,000 patients the run's median fell from 4.98 to 4.75 s.
    with small_pages(), reuse_freed_memory(), ThreadPoolExecutor(max_workers=1) as pool:
        stats = pool.submit(early_measurement_stats, config, tables)
        frame, featurizer = landmark_table(config, tables)
        frame.attrs[SUMMARY_ATTR] = training_summary(frame, tables["measurements"], stats.result())
    return frame, featurizer


def landmark_table(config: Config, tables: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, LandmarkFeaturizer]:
    """The landmark matrix with its analytes and covariate reference in ``attrs`` (no drift summary yet)."""
    featurizer = LandmarkFeaturizer.from_config(config)
    frame = with_site_group(featurizer.fit_transform(tables), tables["patients"])
    frame.attrs[ANALYTES_ATTR] = list(featurizer.analytes_)
    frame.attrs[REFERENCE_ATTR] = featurizer.covariate_reference_.to_json()
    return frame, featurizer


def training_summary(frame: pd.DataFrame, measurements: pd.DataFrame, stats: MeasurementStats | None = None) -> dict:
    """Aggregates only (decile edges, shares, medians): what `crs validate` measures drift against.
    ``stats``: :func:`early_measurement_stats` of the same tables (recomputed when they do not match)."""
    # With stats the measurements are read only if the stats do not match, and the drift code reads the
    # ingest's censoring words as it reads the codes: converting them again would be wasted.
    rows = measurements if stats is not None else summary_measurements(measurements)
    return feature_summary(frame, contracts.feature_columns(frame.columns), rows, stats)


def early_measurement_stats(config: Config, tables: dict[str, pd.DataFrame]) -> MeasurementStats | None:
    """The drift summary's measurement statistics before the landmark table exists: its patients are the
    patients table's sorted ids and its last landmark is the configuration's. None when the patients
    table is unusable (the landmark table then reports why)."""
    try:
        patients = patient_index(tables["patients"])
    except FeatureError:
        return None
    return measurement_stats(summary_measurements(tables["measurements"]), patients, max(config.landmarks_hours))


def summary_measurements(measurements: pd.DataFrame) -> pd.DataFrame:
    """The measurements as the drift summary documents them: ``censoring`` as 0 (none), 1 (left), 2 (right).

    Ingest writes the words (``none``/``left``/``right``); parsed as numbers they were all missing, so the
    stored censored fraction was always 0, and parsing them was most of featurize's time at scale.
    """
    if "censoring" not in measurements.columns:
        return measurements
    codes = censoring_codes(measurements)
    numeric = np.select([codes == CENSORED_BELOW, codes == CENSORED_ABOVE], [1, 2], 0).astype(np.int8)
    return measurements.assign(censoring=numeric)


def with_site_group(frame: pd.DataFrame, patients: pd.DataFrame) -> pd.DataFrame:
    """The landmark table plus ``group__site`` (each row's patient's site) when the cohort has a ``site``
    column: leave-one-site-out validation groups by it; it is never a model feature."""
    if "site" not in patients.columns:
        return frame
    site = patients.assign(patient_id=patients["patient_id"].astype(str)).set_index("patient_id")["site"]
    values = site.reindex(frame[contracts.PATIENT_ID].astype(str)).astype("object").to_numpy()
    return frame.assign(**{contracts.SITE_GROUP: pd.array(values, dtype="str")})


def run(config: Config, tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The landmark matrix for ``tables`` (ingest contract, docs/CONTRACTS.md) under ``config``."""
    return featurize(config, tables)[0]


def describe_features(config: Config, analytes: list[str] | None = None) -> pd.DataFrame:
    """Every model feature (name, analyte, summary, description, unit) for this configuration.

    ``analytes`` defaults to the configured list; with ``auto`` and no list given, the per-analyte
    features are described once for a placeholder ``<analyte>``.
    """
    units = load_registry().canonical_units
    if analytes is None and not isinstance(config.featurize.analytes, str):
        analytes = list(config.featurize.analytes)
    if analytes is not None:
        return feature_table(analytes, model_covariates(config.static_features), units)
    table = feature_table([], model_covariates(config.static_features), units)
    placeholder = pd.DataFrame([
        {"name": f"<analyte>__{s.name}", "analyte": "<analyte>", "summary": s.name,
         "description": s.description.format(analyte="<analyte>"), "unit": s.unit.format(unit="analyte unit")}
        for s in SUMMARIES
    ])
    return pd.concat([table.iloc[:1], placeholder, table.iloc[1:]], ignore_index=True)


def _baseline_kinds(frame: pd.DataFrame, code: str) -> dict[str, dict[str, int]]:
    """Per landmark: rows whose baseline is pre-anchor, the post-anchor fallback, or missing."""
    column = analyte_feature_name(code, "baseline_after_anchor")
    out = {}
    for hours, values in frame.groupby("landmark_hours", sort=True)[column]:
        out[landmark_key(float(hours))] = {
            "pre_anchor": int((values == 0).sum()),
            "after_anchor": int((values == 1).sum()),
            "none": int(values.isna().sum()),
        }
    return out


def score_baseline_windows(patients: pd.DataFrame | None) -> dict[str, int]:
    """Patients whose published-score baselines (EASIX, m-EASIX, CAR-HEMATOTOX) come from before
    lymphodepletion (its start known) and from before infusion (the usual baseline window)."""
    n = 0 if patients is None else len(patients)
    column = "lymphodepletion_start_hours"
    known = 0 if patients is None or column not in patients.columns else int(patients[column].notna().sum())
    return {"before_lymphodepletion": known, "before_infusion": n - known}


def feature_set_report(config: Config, featurizer: LandmarkFeaturizer, frame: pd.DataFrame,
                       patients: pd.DataFrame | None = None) -> dict[str, Any]:
    """What ``paths.feature_set`` holds: the rule, the analytes used (coverage, baseline kinds), the rest."""
    choice = featurizer.analyte_choice_
    fz = config.featurize
    used, excluded = [], []
    for row in choice.to_dict("records"):
        entry = {"analyte": row["analyte"], "known": row["known"], "units": row["units"],
                 "n_patients": row["n_patients"], "coverage": round(row["coverage"], 4)}
        if row["used"]:
            used.append({**entry, "baseline_by_landmark": _baseline_kinds(frame, row["analyte"])})
        else:
            excluded.append({**entry, "reason": row["reason"]})
    return {
        "mode": "auto" if isinstance(fz.analytes, str) else "list",
        "rule": {"min_coverage": fz.min_coverage, "min_patients": fz.min_patients,
                 "at_or_before_hours": max(config.landmarks_hours), "baseline_fallback_hours": fz.baseline_fallback_hours},
        "n_patients": int(frame["patient_id"].nunique()),
        "analytes": [u["analyte"] for u in used],
        "score_baseline_window": score_baseline_windows(patients),
        "used": used,
        "excluded": excluded,
    }


#: Measurement text columns read as Arrow dictionaries (pandas categoricals): Parquet stores them as a
#: dictionary per row group, so each distinct id, analyte, unit or censoring word is decoded and hashed
#: once instead of once per row (at 100,000 patients: 23.5 M rows, ~100,000 distinct ids).
DICTIONARY_COLUMNS = ("patient_id", "analyte", "unit", "censoring")


def _dictionary_columns(path: Path) -> list[str]:
    """The :data:`DICTIONARY_COLUMNS` that ``path`` stores as text (none when its schema is unreadable:
    the plain read then reports the damage)."""
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException, ValueError):
        return []
    text = (pa.types.is_string, pa.types.is_large_string, pa.types.is_string_view)
    return [name for name in DICTIONARY_COLUMNS
            if name in schema.names and any(is_text(schema.field(name).type) for is_text in text)]


def read_measurements(path: Path) -> pd.DataFrame:
    """The ingested measurements with :data:`DICTIONARY_COLUMNS` as categoricals (same text, same rows)."""
    columns = _dictionary_columns(path)
    if columns:
        try:
            frame = pd.read_parquet(path, read_dictionary=columns)
        except (OSError, pa.ArrowException, ValueError):
            frame = None  # the plain read below reports it as one line
        if frame is not None:
            frame.attrs = {}  # as read_stage_parquet: pandas would deep-copy them on every access
            return frame
    return read_stage_parquet(path, "ingested measurements", "crs ingest")


def read_tables(directory: Path) -> dict[str, pd.DataFrame]:
    """The ingest tables in ``directory``; measurements checked against their contract (one-line errors).
    Measurement text columns come as categoricals (:func:`read_measurements`)."""
    tables: dict[str, pd.DataFrame] = {}
    for name in (*REQUIRED_TABLES, *OPTIONAL_TABLES):
        path = directory / f"{name}.parquet"
        if not path.exists():
            if name in REQUIRED_TABLES:
                raise UserError(f"{path}: not found; run `crs ingest` first")
            continue
        tables[name] = (read_measurements(path) if name == "measurements"
                        else read_stage_parquet(path, f"ingested {name}", "crs ingest"))
    contracts.check_frame(tables["measurements"], contracts.MEASUREMENTS, directory / "measurements.parquet", "crs ingest")
    return tables


#: ``crs grade`` outputs featurize reads: the events to label from (replacing ingest's) and the grades.
GRADED_TABLES = ("events", "grades")


def read_graded(directory: Path) -> dict[str, pd.DataFrame]:
    """The events and grade timeline of ``crs grade`` (``cohort.grades`` decided which grades they hold)."""
    tables = {}
    for name in GRADED_TABLES:
        path = directory / f"{name}.parquet"
        if not path.exists():
            raise UserError(f"{path}: not found; run `crs grade` first")
        tables[name] = read_stage_parquet(path, f"graded {name}", "crs grade")
    return tables


def _rule(config: Config) -> str:
    fz = config.featurize
    return (f">= {fz.min_coverage:g} of patients and >= {fz.min_patients} patients with a value "
            f"at or before {max(config.landmarks_hours):g} h")


def list_analytes(config: Config) -> list[str] | None:
    """Print the analytes featurize would use (with coverage); None when they cannot be known yet."""
    directory = Path(config.paths.interim_dir)
    if not all((directory / f"{name}.parquet").exists() for name in REQUIRED_TABLES):
        if isinstance(config.featurize.analytes, str):
            print(f"analytes: auto ({_rule(config)}): chosen from the data at featurize time; "
                  f"no ingested data in {directory} yet (run `crs ingest`)")
            return None
        print(f"analytes: {', '.join(config.featurize.analytes)} (from params)")
        return list(config.featurize.analytes)
    tables = read_tables(directory)
    featurizer = LandmarkFeaturizer.from_config(config).fit(tables)
    choice = featurizer.analyte_choice_
    mode = f"auto ({_rule(config)})" if isinstance(config.featurize.analytes, str) else "from params"
    print(f"analytes: {len(featurizer.analytes_)} used, {mode}, from {directory}:")
    width = int(choice["analyte"].str.len().max()) if len(choice) else 0
    for row in choice.itertuples(index=False):
        status = "used" if row.used else f"left out: {row.reason}"
        print(f"  {row.analyte:<{width}}  coverage {row.coverage:.3f} ({row.n_patients} patients)  {status}")
    return list(featurizer.analytes_)


def main(config: Config, list_features: bool = False) -> None:
    if list_features:
        analytes = list_analytes(config)
        table = describe_features(config, analytes)
        width = int(table["name"].str.len().max())
        unit_width = int(table["unit"].str.len().max())
        print()
        for row in table.itertuples(index=False):
            print(f"{row.name:<{width}}  {row.unit:<{unit_width}}  {row.description}")
        return
    tables = read_tables(Path(config.paths.interim_dir))
    tables.update(read_graded(Path(config.paths.graded_dir)))
    frame, featurizer = featurize(config, tables)
    write_parquet(frame, config.paths.landmarks)
    frame.attrs = {}  # written; pandas would deep-copy them on every column the report reads
    report = feature_set_report(config, featurizer, frame, tables["patients"])
    write_json(report, config.paths.feature_set)
    n_features = frame.shape[1] - 1 - 2 * len(config.targets)
    print(
        f"featurize: {frame['patient_id'].nunique()} patients x {len(config.landmarks_hours)} landmarks "
        f"= {len(frame)} rows, {len(report['analytes'])} analytes ({report['mode']}), {n_features} features "
        f"-> {config.paths.landmarks}, {config.paths.feature_set}"
    )
