"""Standard-format adapters (SDTM, OMOP) feed several source tables into one canonical table: ingest
reports rows read, quarantined and left out of scope per source table, and they reconcile."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from pipeline.adapters.canonical import RawTable
from pipeline.cohort import EVENTS, MEASUREMENTS, PATIENTS
from pipeline.ingestion import ingest_tables


def _raw(spec, rows: dict[str, list], path: str, out_of_scope: dict[str, int] | None = None) -> RawTable:
    return RawTable(spec, Path(path), pa.table({k: pa.array(v, type=pa.string()) for k, v in rows.items()}),
                    out_of_scope=out_of_scope or {})


def test_counts_per_source_table_reconcile():
    raw = {
        "patients": _raw(PATIENTS, {"patient_id": ["A", "B"], "source_table": ["DM", "DM"]}, "DM.xpt"),
        "measurements": _raw(MEASUREMENTS, {
            "patient_id": ["A", "A", "B", "B", "B"],
            "time": ["1", "2", "1", "2", "3"],
            "analyte": ["CRP", "CRP", "TEMP", "SBP", "SBP"],
            "value": ["5", "bad", "38.5", "80", "-5"],
            "unit": ["mg/L", "mg/L", "C", "mmHg", "mmHg"],
            "source_table": ["LB", "LB", "VS", "VS", "VS"],
        }, "LB.xpt+VS.xpt", out_of_scope={"LB": 7}),
        "events": _raw(EVENTS, {"patient_id": ["A"], "event": ["CRS"], "grade": ["2"], "time": ["5"],
                                "source_table": ["AE"]}, "AE.xpt", out_of_scope={"AE": 4}),
    }
    report = ingest_tables(raw).report
    m = report["files"]["measurements"]
    assert m["out_of_scope"] == 7
    assert m["by_source_table"] == {"LB": {"rows_read": 2, "rows_quarantined": 1, "out_of_scope": 7},
                                    "VS": {"rows_read": 3, "rows_quarantined": 1, "out_of_scope": 0}}
    assert m["rows_read"] == m["rows_accepted"] + m["rows_quarantined"] + m["duplicates_dropped"] == 5
    assert report["files"]["events"]["by_source_table"] == {"AE": {"rows_read": 1, "rows_quarantined": 0,
                                                                   "out_of_scope": 4}}


def test_canonical_files_have_no_source_breakdown():
    raw = {
        "patients": _raw(PATIENTS, {"patient_id": ["A"]}, "patients.csv"),
        "measurements": _raw(MEASUREMENTS, {"patient_id": ["A"], "time": ["1"], "analyte": ["CRP"], "value": ["5"],
                                            "unit": ["mg/L"]}, "measurements.csv"),
        "events": _raw(EVENTS, {"patient_id": [], "event": [], "grade": [], "time": []}, "events.csv"),
    }
    files = ingest_tables(raw).report["files"]
    assert all("by_source_table" not in counts and "out_of_scope" not in counts for counts in files.values())
