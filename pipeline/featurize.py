"""``crs featurize``: ingest tables -> ``data/processed/landmarks.parquet`` (features + labels).

``run`` is pure (tables in, frame out) and goes through :class:`features.LandmarkFeaturizer`, the
same code path a notebook uses; ``main`` does the reading and the atomic writing.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from features import LandmarkFeaturizer, feature_table
from pipeline import contracts
from pipeline.config import Config
from pipeline.errors import UserError
from pipeline.io import read_stage_parquet, write_parquet
from pipeline.registry import load_registry

REQUIRED_TABLES = ("patients", "measurements", "events")
OPTIONAL_TABLES = ("treatments",)


def run(config: Config, tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The landmark matrix for ``tables`` (ingest contract, docs/CONTRACTS.md) under ``config``."""
    featurizer = LandmarkFeaturizer.from_config(config)
    return featurizer.fit(tables).transform(tables)


def describe_features(config: Config) -> pd.DataFrame:
    """Every model feature (name, analyte, summary, description, unit) for this configuration."""
    return feature_table(config.featurize.analytes, config.static_features, load_registry().canonical_units)


def read_tables(directory: Path) -> dict[str, pd.DataFrame]:
    """The ingest tables in ``directory``; measurements checked against their contract (one-line errors)."""
    tables: dict[str, pd.DataFrame] = {}
    for name in (*REQUIRED_TABLES, *OPTIONAL_TABLES):
        path = directory / f"{name}.parquet"
        if not path.exists():
            if name in REQUIRED_TABLES:
                raise UserError(f"{path}: not found; run `crs ingest` first")
            continue
        tables[name] = read_stage_parquet(path, f"ingested {name}", "crs ingest")
    contracts.check_frame(tables["measurements"], contracts.MEASUREMENTS, directory / "measurements.parquet", "crs ingest")
    return tables


def main(config: Config, list_features: bool = False) -> None:
    if list_features:
        table = describe_features(config)
        width = int(table["name"].str.len().max())
        unit_width = int(table["unit"].str.len().max())
        for row in table.itertuples(index=False):
            print(f"{row.name:<{width}}  {row.unit:<{unit_width}}  {row.description}")
        return
    tables = read_tables(Path(config.paths.interim_dir))
    frame = run(config, tables)
    write_parquet(frame, config.paths.landmarks)
    n_features = frame.shape[1] - 1 - 2 * len(config.targets)
    print(
        f"featurize: {frame['patient_id'].nunique()} patients x {len(config.landmarks_hours)} landmarks "
        f"= {len(frame)} rows, {n_features} features -> {config.paths.landmarks}"
    )
