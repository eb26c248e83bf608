"""Adapters: every input format hands ingestion the same canonical raw text tables."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipeline.adapters import canonical, frames
from pipeline.errors import UserError
from pipeline.ingestion import ingest_tables

PATIENTS = "patient_id,anchor_time,age\nP1,2024-01-01T00:00:00,60\nP2,2024-01-02T12:00:00,55\n"
MEASUREMENTS = (
    "patient_id,time,analyte,value,unit\n"
    "P1,2024-01-01T06:00:00,IL-6,12.5,pg/mL\n"
    "P1,2024-01-01T12:00:00,CRP,2.5,mg/dL\n"
    "P2,2024-01-03T12:00:00,Ferritin,>100000,ug/L\n"
    "P2,2024-01-03T13:00:00,PLT,-5,10^9/L\n"
)
EVENTS = "patient_id,event,grade,time\nP1,CRS,2,2024-01-02T00:00:00\n"


@pytest.fixture
def cohort_dir(cohort_writer) -> Path:
    return cohort_writer({"patients": PATIENTS, "measurements": MEASUREMENTS, "events": EVENTS})


def test_canonical_reads_every_column_as_text(cohort_dir):
    raw = canonical.read_cohort(cohort_dir)
    assert sorted(raw) == ["events", "measurements", "patients"]
    assert all(str(field.type) == "string" for t in raw.values() for field in t.arrow.schema)
    assert raw["measurements"].line_numbers(pd.Series([0, 3]).to_numpy()).tolist() == [2, 5]


def test_canonical_rejects_a_table_given_twice(cohort_dir):
    pd.read_csv(cohort_dir / "events.csv", dtype=str).to_parquet(cohort_dir / "events.parquet")
    with pytest.raises(UserError, match=r"table 'events' given twice"):
        canonical.read_cohort(cohort_dir)


def test_frames_adapter_ingests_like_the_files(cohort_dir):
    as_frames = {name: pd.read_csv(cohort_dir / f"{name}.csv", dtype=str) for name in ("patients", "measurements", "events")}
    from_files = ingest_tables(canonical.read_cohort(cohort_dir))
    from_frames = ingest_tables(frames.frames_to_raw(as_frames))
    for name in ("patients", "measurements", "events", "treatments"):
        pd.testing.assert_frame_equal(from_files.tables[name], from_frames.tables[name])
    assert from_frames.quarantine["reason"].tolist() == ["out_of_range"]


def test_combined_table_round_trips(cohort_dir):
    raw = canonical.read_cohort(cohort_dir)
    combined = frames.raw_to_combined(raw)
    assert set(combined.columns) >= {"patient_id", "analyte", "event", "age"}
    again = ingest_tables(frames.combined_to_raw(combined))
    for name in ("patients", "measurements", "events"):
        pd.testing.assert_frame_equal(ingest_tables(raw).tables[name], again.tables[name])


def test_new_cohort_without_events(cohort_writer):
    cohort = cohort_writer({"patients": PATIENTS, "measurements": MEASUREMENTS}, name="new")
    raw = frames.read_new_cohort(cohort)
    assert raw["events"].n_rows == 0
    assert len(ingest_tables(raw).tables["events"]) == 0
