"""Measurements validated in blocks of patients (``chunk_rows``) give the files the whole table gives,
byte for byte: the recorded golden outputs of :mod:`.test_golden`, with blocks down to one row."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.config import Config
from pipeline.ingest import main
from pipeline.ingestion.blocks import ROW_GROUP_ROWS, ParquetBlocks, measurement_parquet_options
from tests.pipeline.ingestion.test_golden import GOLDEN, TABLES, _same_parquet

CASES = ("unsorted", "sorted_panels", "hours")


def _counting(write: Callable, calls: list) -> Callable:
    def counted(self: ParquetBlocks, frame: pd.DataFrame) -> None:
        calls.append(len(frame))
        write(self, frame)

    return counted


@pytest.mark.parametrize("chunk_rows", [1, 7, 60, 10_000])
@pytest.mark.parametrize("case", CASES)
def test_blocks_write_the_recorded_outputs(case: str, chunk_rows: int, tmp_path: Path, monkeypatch) -> None:
    work = tmp_path / case
    shutil.copytree(GOLDEN / case / "cohort", work / "cohort")
    monkeypatch.chdir(work)  # relative paths, as recorded
    blocks = []
    monkeypatch.setattr(ParquetBlocks, "__call__", _counting(ParquetBlocks.__call__, blocks))
    main(Config(), cohort=Path("cohort"), out=Path("out"), report=Path("ingest.json"), chunk_rows=chunk_rows)
    assert len(blocks) > 1 if chunk_rows < 100 else not blocks  # a table within chunk_rows is validated whole
    want = GOLDEN / case
    assert (work / "ingest.json").read_bytes() == (want / "ingest.json").read_bytes()
    assert (work / "out" / "quarantine.csv").read_bytes() == (want / "out" / "quarantine.csv").read_bytes()
    for name in TABLES:
        _same_parquet(work / "out" / f"{name}.parquet", want / "out" / f"{name}.parquet")


def test_parquet_blocks_regroup_rows_as_one_write(tmp_path: Path) -> None:
    """Blocks of uneven sizes across row-group boundaries: the file ``to_parquet`` writes at once."""
    rng = np.random.default_rng(3)
    n = ROW_GROUP_ROWS + 70_001
    whole = pd.DataFrame({
        "patient_id": pd.array(np.char.mod("P%05d", rng.integers(0, 50_000, n)), dtype="str"),
        "hours_since_anchor": rng.uniform(-100, 700, n),
        "analyte": pd.array(rng.choice(["IL6", "CRP", "FERRITIN"], n), dtype="str"),
        "value": rng.normal(size=n), "known": rng.random(n) < 0.9,
    })
    whole.to_parquet(tmp_path / "whole.parquet", index=False, **measurement_parquet_options(list(whole.columns)))
    sink = ParquetBlocks(tmp_path / "blocks.parquet")
    cuts = np.sort(rng.choice(np.arange(1, n), 40, replace=False))
    for block in np.split(np.arange(n), cuts):
        sink(whole.iloc[block].reset_index(drop=True))
    sink.close()
    assert (tmp_path / "blocks.parquet").read_bytes() == (tmp_path / "whole.parquet").read_bytes()
    assert pq.read_metadata(tmp_path / "blocks.parquet").num_row_groups == 2


def test_parquet_blocks_of_no_rows(tmp_path: Path) -> None:
    empty = pd.DataFrame({"patient_id": pd.array([], dtype="str"), "value": np.zeros(0)})
    empty.to_parquet(tmp_path / "whole.parquet", index=False, **measurement_parquet_options(list(empty.columns)))
    sink = ParquetBlocks(tmp_path / "blocks.parquet")
    sink(empty)
    sink(empty)
    sink.close()
    assert (tmp_path / "blocks.parquet").read_bytes() == (tmp_path / "whole.parquet").read_bytes()


def _outputs(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_blocks_with_result_times_match_the_whole_table(fmt: str, tmp_path: Path, monkeypatch) -> None:
    """Result times (their own time form, checked against the sample's) and a Parquet input: the block
    path writes what the whole-table path writes."""
    cohort = tmp_path / "cohort"
    shutil.copytree(GOLDEN / "unsorted" / "cohort", cohort)
    frame = pd.read_csv(cohort / "measurements.csv", dtype=str, keep_default_na=False)
    rng = np.random.default_rng(5)
    stamps = pd.to_datetime(frame["time"], errors="coerce", format="ISO8601", utc=True)
    later = (stamps + pd.to_timedelta(rng.integers(-2, 72, len(frame)), unit="h")).dt.strftime("%Y-%m-%dT%H:%M:%S")
    frame["result_time"] = later.fillna("").where(rng.random(len(frame)) < 0.8, "")
    frame.loc[rng.random(len(frame)) < 0.03, "result_time"] = "soon"
    (cohort / "measurements.csv").unlink()
    if fmt == "csv":
        frame.to_csv(cohort / "measurements.csv", index=False)
    else:
        frame.to_parquet(cohort / "measurements.parquet", index=False)
    monkeypatch.chdir(tmp_path)
    outputs = {}
    for chunk_rows in (None, 5):
        out = tmp_path / f"out_{chunk_rows}"
        main(Config(), cohort=Path("cohort"), out=out / "interim", report=out / "ingest.json", chunk_rows=chunk_rows)
        outputs[chunk_rows] = _outputs(out)
    assert outputs[5] == outputs[None]
    report = outputs[None]["ingest.json"].decode()
    assert '"out_of_range"' in report and "bad_time" in report
    assert "result_hours_since_anchor" in pq.read_schema(tmp_path / "out_5" / "interim" / "measurements.parquet").names


def test_blocks_fail_with_one_line_and_write_nothing(tmp_path: Path) -> None:
    """Timestamps without ``anchor_time``: the same one-line error as the whole table, and no output."""
    from pipeline.errors import UserError

    cohort = tmp_path / "cohort"
    shutil.copytree(GOLDEN / "unsorted" / "cohort", cohort)
    patients = pd.read_csv(cohort / "patients.csv", dtype=str, keep_default_na=False)
    patients.drop(columns="anchor_time").to_csv(cohort / "patients.csv", index=False)
    messages = []
    for chunk_rows in (None, 5):
        out = tmp_path / f"out_{chunk_rows}"
        with pytest.raises(UserError) as error:
            main(Config(), cohort=cohort, out=out / "interim", report=out / "ingest.json", chunk_rows=chunk_rows)
        messages.append(str(error.value))
        assert not out.exists() or not any(out.rglob("*"))
    assert messages[0] == messages[1] and "\n" not in messages[0] and "anchor_time" in messages[0]


def test_one_block_is_the_whole_table() -> None:
    """The block path with a single block (``ingest_tables`` called directly; the stage validates a
    table within ``chunk_rows`` whole) gives the whole table's frames and report."""
    from pipeline.adapters.canonical import read_cohort
    from pipeline.ingestion import ingest_tables

    raw = read_cohort(GOLDEN / "unsorted" / "cohort")
    whole = ingest_tables(raw)
    frames: list[pd.DataFrame] = []
    blocks = ingest_tables(raw, chunk_rows=10_000, sink=frames.append)
    assert len(frames) == 1 and "measurements" not in blocks.tables
    pd.testing.assert_frame_equal(frames[0], whole.tables["measurements"])
    pd.testing.assert_frame_equal(blocks.quarantine, whole.quarantine)
    assert blocks.report == whole.report


def test_the_params_key_chooses_blocks(tmp_path: Path, monkeypatch) -> None:
    """``ingest.chunk_rows`` in params.yaml is what ``crs ingest`` uses when no value is passed."""
    from pipeline.config import parse_config

    work = tmp_path / "unsorted"
    shutil.copytree(GOLDEN / "unsorted" / "cohort", work / "cohort")
    monkeypatch.chdir(work)
    blocks: list = []
    monkeypatch.setattr(ParquetBlocks, "__call__", _counting(ParquetBlocks.__call__, blocks))
    main(parse_config({"ingest": {"chunk_rows": 7}}), cohort=Path("cohort"), out=Path("out"), report=Path("ingest.json"))
    assert len(blocks) > 1
    assert (work / "out" / "quarantine.csv").read_bytes() == (GOLDEN / "unsorted" / "out" / "quarantine.csv").read_bytes()
    assert parse_config({}).ingest.chunk_rows == 5_000_000
    assert parse_config({"ingest": {"chunk_rows": None}}).ingest.chunk_rows is None
