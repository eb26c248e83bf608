"""Byte-for-byte: ``crs ingest`` writes what the code before the issue-14 speed work wrote for the same
awkward cohorts (``golden/``, recorded as :mod:`.awkward` says), chunked or not.

``out/measurements.parquet`` was re-recorded once since (2026-12-03, eighth session), when the writer
stopped computing min/max statistics of the analyte, unit and censoring columns and a dictionary for
the hours (:func:`pipeline.ingestion.blocks.measurement_parquet_options`): before replacing each file,
its table and schema (pandas metadata included) were checked equal to the recorded one's, and every
other output byte-equal to the recording."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import Config
from pipeline.ingest import main
from tests.pipeline.ingestion.awkward import CASES, make_case

GOLDEN = Path(__file__).parent / "golden"
TABLES = ("patients", "measurements", "events", "treatments")


def _same_parquet(got: Path, want: Path) -> None:
    """Equal bytes when written by the same Arrow and pandas; equal tables and schemas otherwise."""
    got_meta, want_meta = pq.read_metadata(got), pq.read_metadata(want)
    same_writer = got_meta.created_by == want_meta.created_by and (
        pq.read_schema(got).metadata == pq.read_schema(want).metadata)
    if same_writer:
        assert got.read_bytes() == want.read_bytes(), got.name
    else:  # pragma: no cover - another pyarrow/pandas version than the one that recorded the files
        assert pq.read_table(got).equals(pq.read_table(want)), got.name
        assert pq.read_schema(got).equals(pq.read_schema(want), check_metadata=False), got.name


def _ingest(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: Config) -> Path:
    work = tmp_path / case
    shutil.copytree(GOLDEN / case / "cohort", work / "cohort")
    monkeypatch.chdir(work)  # relative paths, as recorded
    main(config, cohort=Path("cohort"), out=Path("out"), report=Path("ingest.json"))
    return work


@pytest.mark.parametrize("case", CASES)
def test_cohort_files_are_what_the_generator_makes(case: str, tmp_path: Path) -> None:
    make_case(case, tmp_path)
    for name in ("patients", "measurements", "events"):
        assert (tmp_path / f"{name}.csv").read_bytes() == (GOLDEN / case / "cohort" / f"{name}.csv").read_bytes()


@pytest.mark.parametrize("case", CASES)
def test_outputs_match_the_recorded_ones_byte_for_byte(case: str, tmp_path: Path, monkeypatch) -> None:
    work = _ingest(case, tmp_path, monkeypatch, Config())
    want = GOLDEN / case
    assert (work / "ingest.json").read_bytes() == (want / "ingest.json").read_bytes()
    assert (work / "out" / "quarantine.csv").read_bytes() == (want / "out" / "quarantine.csv").read_bytes()
    for name in TABLES:
        _same_parquet(work / "out" / f"{name}.parquet", want / "out" / f"{name}.parquet")


def test_the_cases_are_awkward() -> None:
    """The recorded cohorts exercise what they claim to (a guard against a generator that drifts)."""
    import json

    report = json.loads((GOLDEN / "unsorted" / "ingest.json").read_text())
    reasons = report["files"]["measurements"]["quarantine_by_reason"]
    for reason in ("missing_patient_id", "unknown_patient", "bad_time", "missing_value", "unparseable_value",
                   "non_finite_value", "unknown_unit", "out_of_range", "conflicting_duplicate"):
        assert reasons.get(reason, 0) > 0, reason
    assert report["files"]["measurements"]["duplicates_dropped"] > 0
    censoring = pq.read_table(GOLDEN / "unsorted" / "out" / "measurements.parquet").column("censoring")
    assert set(censoring.unique().to_pylist()) == {"none", "left", "right"}
    assert report["unknown_analytes"]["n_rows"] > 0 and report["unit_conversions"]
    assert isinstance(censoring, pa.ChunkedArray)
