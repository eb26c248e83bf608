"""Ingest: every row accounted for, units normalised, bad files rejected with one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import cohort, ingest
from pipeline.adapters.canonical import RawTable, read_cohort
from pipeline.config import Config, PathsConfig
from pipeline.errors import UserError
from pipeline.ingestion import IngestResult, ingest_tables


def ingest_cohort(cohort_dir: Path) -> IngestResult:
    """Canonical adapter + the pure ingestion library (what ``crs ingest`` runs, without writing)."""
    return ingest_tables(read_cohort(cohort_dir))


def in_memory(spec: cohort.TableSpec, columns: list[str], rows: list[tuple]) -> RawTable:
    """A raw text table built in memory (None = empty field), as an adapter would hand it over."""
    arrays = {c: pa.array([row[i] for row in rows], pa.string()) for i, c in enumerate(columns)}
    return RawTable(spec, Path(f"{spec.name}.csv"), pa.table(arrays))

PATIENTS = """
patient_id,anchor_time,age,product
P1,2024-01-01T00:00:00,60,axi-cel
P2,2024-01-02T12:00:00,55,tisa-cel
P2,2024-01-02T12:00:00,55,tisa-cel
P3,garbage,70,liso-cel
"""
MEASUREMENTS = """
patient_id,time,analyte,value,unit
P1,2024-01-01T06:00:00,IL-6,12.5,pg/mL
P1,2024-01-01T06:00:00,IL-6,12.5,pg/mL
P1,2024-01-01T06:00:00,IL6,13,pg/mL
P1,2024-01-01T12:00:00,CRP,2.5,mg/dL
P1,2024-01-01T12:00:00,CRP,25,mg/L
P1,2024-01-01T18:00:00,Interleukin 6,<1.5,ng/L
P1,2023-12-31T18:00:00,Creatinine,88.4,umol/L
P1,2024-01-01T18:00:00,Ferritin,hemolyzed,ug/L
P1,2024-01-01T18:00:00,Ferritin,,ug/L
P1,2024-01-01T18:00:00,PLT,-5,10^9/L
P1,2024-01-01T19:00:00,PLT,150,bananas
P1,05/01/2024 10:00,PLT,150,10^9/L
P9,2024-01-01T19:00:00,PLT,150,10^9/L
P2,2024-01-03T12:00:00+02:00,Temperature,101.3,F
P2,2024-01-03T12:00:00,Troponin I,0.5,ng/mL
P2,2024-01-03T13:00:00,Ferritin,>100000,ug/L
P3,2024-01-03T12:00:00,CRP,5,mg/L
"""
EVENTS = """
patient_id,event,grade,time
P1,CRS,1,2024-01-02T00:00:00
P1,crs,3,2024-01-03T00:00:00
P2,ICANS,7,2024-01-05T00:00:00
P2,ICANS,2,2024-01-05T00:00:00
P2,ICANS,3,2024-01-05T00:00:00
"""
TREATMENTS = """
patient_id,time,drug,dose,unit
P1,2024-01-02T06:00:00,Tocilizumab,8,mg/kg
P1,2024-01-02T07:00:00,dexamethasone,ten,mg
"""


@pytest.fixture
def hand_cohort(cohort_writer):
    return cohort_writer(
        {"patients": PATIENTS, "measurements": MEASUREMENTS, "events": EVENTS, "treatments": TREATMENTS}
    )


def test_hand_cohort_reasons_by_line(hand_cohort):
    result = ingest_cohort(hand_cohort)
    q = result.quarantine
    got = {(Path(f).stem, int(line)): reason for f, line, reason in q[["source_file", "source_line", "reason"]].itertuples(index=False)}
    assert got == {
        ("patients", 5): "bad_time",
        ("measurements", 2): "conflicting_duplicate",
        ("measurements", 4): "conflicting_duplicate",
        ("measurements", 9): "unparseable_value",
        ("measurements", 10): "missing_value",
        ("measurements", 11): "out_of_range",
        ("measurements", 12): "unknown_unit",
        ("measurements", 13): "bad_time",
        ("measurements", 14): "unknown_patient",
        ("measurements", 18): "unknown_patient",  # P3 was quarantined for its anchor_time
        ("events", 4): "invalid_grade",
        ("events", 5): "conflicting_duplicate",
        ("events", 6): "conflicting_duplicate",
        ("treatments", 3): "unparseable_value",
    }
    # Original fields travel with the quarantined row.
    row = q[(q["source_line"] == 11) & q["source_file"].str.endswith("measurements.csv")].iloc[0]
    assert (row["analyte"], row["value"], row["unit"]) == ("PLT", "-5", "10^9/L")


def test_hand_cohort_counts_reconcile(hand_cohort):
    result = ingest_cohort(hand_cohort)
    report = result.report
    assert report["rows_read"] == 4 + 17 + 5 + 2
    assert report["rows_read"] == report["rows_accepted"] + report["rows_quarantined"] + report["duplicates_dropped"]
    # 1 exact patient duplicate; 1 exact IL-6 duplicate and 1 CRP repeated in another unit.
    assert report["duplicates_dropped"] == 3
    assert report["files"]["measurements"]["rows_accepted"] == 6
    # Counts only (ingest.json is in git); the name as given stays in the accepted table.
    assert report["unknown_analytes"] == {"n_names": 1, "n_rows": 1}
    m = result.tables["measurements"]
    assert m.loc[~m["known_analyte"], "analyte"].tolist() == ["Troponin I"]
    assert report["unit_conversions"] == {
        "CREAT: umol/L -> mg/dL": 1,
        "CRP: mg/dL -> mg/L": 1,
        "FERRITIN: ug/L -> ng/mL": 1,
        "IL6: ng/L -> pg/mL": 1,
        "TEMP: F -> C": 1,
    }
    assert report["synonyms_mapped"]["Interleukin 6 -> IL6"] == 1
    assert report["patients"] == 2


def test_values_times_and_censoring_are_normalised(hand_cohort):
    m = ingest_cohort(hand_cohort).tables["measurements"].set_index(["patient_id", "analyte"])
    crp = m.loc[("P1", "CRP")]
    assert crp["value"] == pytest.approx(25.0) and crp["unit"] == "mg/L" and crp["hours_since_anchor"] == 12.0
    creat = m.loc[("P1", "CREAT")]
    assert creat["value"] == pytest.approx(1.0) and creat["hours_since_anchor"] == -6.0
    il6 = m.loc[("P1", "IL6")]
    assert (il6["value"], il6["censoring"], il6["hours_since_anchor"]) == (1.5, "left", 18.0)
    temp = m.loc[("P2", "TEMP")]
    # 12:00+02:00 is 10:00 UTC, 22 h after a 12:00 UTC anchor the day before.
    assert temp["value"] == pytest.approx(38.5) and temp["hours_since_anchor"] == 22.0
    ferritin = m.loc[("P2", "FERRITIN")]
    assert (ferritin["value"], ferritin["censoring"]) == (100000.0, "right")
    unknown = m.loc[("P2", "Troponin I")]
    assert not unknown["known_analyte"] and unknown["unit"] == "ng/mL"


def test_events_and_treatments_are_normalised(hand_cohort):
    tables = ingest_cohort(hand_cohort).tables
    events = tables["events"]
    assert events[["patient_id", "event", "grade", "hours_since_anchor"]].values.tolist() == [
        ["P1", "CRS", 1, 24.0],
        ["P1", "CRS", 3, 48.0],
    ]
    treatments = tables["treatments"]
    assert treatments[["drug", "dose", "hours_since_anchor"]].values.tolist() == [["tocilizumab", 8.0, 30.0]]


def test_patients_covariates_typed(hand_cohort):
    patients = ingest_cohort(hand_cohort).tables["patients"]
    assert patients["age"].dtype == np.float64
    assert patients["product"].tolist() == ["axi-cel", "tisa-cel"]


def test_hours_form_needs_no_anchor(cohort_writer):
    cohort = cohort_writer(
        {
            "patients": "patient_id,age\nA,50\nB,61",
            "measurements": "patient_id,time,analyte,value,unit\nA,-12.5,CRP,3,mg/L\nA,24,CRP,40,mg/L\nB,oops,CRP,1,mg/L",
            "events": "patient_id,event,grade,time\nA,CRS,2,30",
        }
    )
    result = ingest_cohort(cohort)
    assert result.tables["measurements"]["hours_since_anchor"].tolist() == [-12.5, 24.0]
    assert result.quarantine["reason"].tolist() == ["bad_time"]


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        ({"patients": "patient_id\nA"}, r"measurements\.csv: required table 'measurements' not found"),
        (
            {"patients": "patient_id\nA", "measurements": "patient_id,time,analyte,unit\nA,1,CRP,mg/L",
             "events": "patient_id,event,grade,time"},
            r"measurements\.csv: missing required column 'value'",
        ),
        (
            {"patients": "patient_id\nA", "measurements": "patient_id,time,analyte,value,unit",
             "events": "patient_id,event,grade,time\nA,CRS,1,3"},
            r"measurements\.csv: table 'measurements' has no rows",
        ),
        (
            {"patients": "patient_id\nA",
             "measurements": "patient_id,time,analyte,value,unit\nA,2024-01-01T00:00:00,CRP,1,mg/L",
             "events": "patient_id,event,grade,time\nA,CRS,1,3"},
            r"measurements\.csv: column 'time' holds timestamps but the patients table has no 'anchor_time'",
        ),
    ],
)
def test_file_level_problems_raise_one_line(cohort_writer, tables, message):
    cohort = cohort_writer(tables)
    with pytest.raises(UserError, match=message) as info:
        ingest_cohort(cohort)
    assert "\n" not in str(info.value)


def test_missing_directory_and_unreadable_parquet(tmp_path):
    with pytest.raises(UserError, match="cohort directory not found"):
        ingest_cohort(tmp_path / "absent")
    cohort = tmp_path / "c"
    cohort.mkdir()
    (cohort / "patients.parquet").write_bytes(b"not a parquet file")
    with pytest.raises(UserError, match=r"patients\.parquet: unreadable file"):
        ingest_cohort(cohort)


def test_parquet_cohort_reads_like_csv(hand_cohort, tmp_path):
    parquet_dir = tmp_path / "pq"
    parquet_dir.mkdir()
    for name in ("patients", "measurements", "events", "treatments"):
        pd.read_csv(hand_cohort / f"{name}.csv", dtype=str, keep_default_na=False).to_parquet(
            parquet_dir / f"{name}.parquet"
        )
    a, b = ingest_cohort(hand_cohort), ingest_cohort(parquet_dir)
    pd.testing.assert_frame_equal(a.tables["measurements"], b.tables["measurements"])
    assert a.report["quarantine_by_reason"] == b.report["quarantine_by_reason"]


# ----------------------------------------------------------------------------------------------
# Reason order: a row failing several checks gets the first reason of REASONS (docs/CONTRACTS.md).
# ----------------------------------------------------------------------------------------------


def test_each_reason_is_assigned_in_documented_order():
    """Each row fails the check it is named after *and* every later one, so only the order decides."""
    patients = in_memory(cohort.PATIENTS, ["patient_id", "age"], [("A", "50"), ("B", "61")])
    measurements = in_memory(
        cohort.MEASUREMENTS,
        ["patient_id", "time", "analyte", "value", "unit"],
        [
            (None, "soon", "CRP", "abc", "furlongs"),   # line 2: also bad time, bad value, bad unit
            ("ZZ", "soon", "CRP", "abc", "furlongs"),   # line 3: also bad time, bad value, bad unit
            ("A", "soon", "CRP", None, "furlongs"),     # line 4: also empty value, bad unit
            ("A", "1", "CRP", "NA", "furlongs"),        # line 5: also bad unit
            ("A", "2", "CRP", "abc", "furlongs"),       # line 6: also bad unit
            ("A", "2.5", "CRP", "1e400", "furlongs"),   # line 7: also bad unit, out of range
            ("A", "3", "CRP", "-5", "furlongs"),        # line 8: also out of range
            ("A", "4", "CRP", "-5", "mg/L"),            # line 9
            ("A", "5", "CRP", "3", "mg/L"),             # line 10: conflicts with line 11
            ("A", "5", "CRP", "4", "mg/L"),             # line 11
            ("B", "5", "CRP", "4", "mg/L"),             # line 12: accepted
        ],
    )
    events = in_memory(
        cohort.EVENTS,
        ["patient_id", "event", "grade", "time"],
        [
            (None, None, "9", "later"),  # line 2: also unknown patient, bad time, empty event, invalid grade
            ("A", None, "9", "1"),       # line 3: also invalid grade
            ("A", "CRS", "9", "1"),      # line 4
            ("B", "CRS", "1", "1"),      # line 5: accepted
        ],
    )
    observations = in_memory(
        cohort.OBSERVATIONS,
        ["patient_id", "time", "item", "value"],
        [
            ("A", "1", "O2 device", "jetpack"),  # line 2: unknown term
            ("B", "1", "ICE", "11"),             # line 3: out of range (checked after unknown_term)
            ("B", "2", "ICE", "10"),             # line 4: accepted
        ],
    )
    result = ingest_tables({"patients": patients, "measurements": measurements, "events": events,
                            "observations": observations})
    q = result.quarantine
    got = {(Path(f).stem, int(line)): reason for f, line, reason in q[["source_file", "source_line", "reason"]].itertuples(index=False)}
    assert got == {
        ("observations", 2): "unknown_term",
        ("observations", 3): "out_of_range",
        ("measurements", 2): "missing_patient_id",
        ("measurements", 3): "unknown_patient",
        ("measurements", 4): "bad_time",
        ("measurements", 5): "missing_value",
        ("measurements", 6): "unparseable_value",
        ("measurements", 7): "non_finite_value",
        ("measurements", 8): "unknown_unit",
        ("measurements", 9): "out_of_range",
        ("measurements", 10): "conflicting_duplicate",
        ("measurements", 11): "conflicting_duplicate",
        ("events", 2): "missing_patient_id",
        ("events", 3): "missing_value",
        ("events", 4): "invalid_grade",
    }
    assert set(got.values()) == set(cohort.REASONS)  # every reason covered once
    assert result.tables["measurements"][["patient_id", "value"]].values.tolist() == [["B", 4.0]]
    assert result.tables["events"]["patient_id"].tolist() == ["B"]
    row = q[q["reason"] == "missing_patient_id"].iloc[0]
    assert row["detail"] == "patient_id is empty" and row["unit"] == "furlongs"


def test_stage_main_writes_to_config_paths(hand_cohort, tmp_path):
    config = Config(paths=PathsConfig(interim_dir=tmp_path / "interim", ingest_report=tmp_path / "r" / "ingest.json"))
    ingest.main(config, cohort=hand_cohort)
    written = sorted(p.name for p in (tmp_path / "interim").iterdir())
    assert written == ["events.parquet", "measurements.parquet", "observations.parquet", "patients.parquet",
                       "quarantine.csv", "treatments.parquet"]
    saved = json.loads((tmp_path / "r" / "ingest.json").read_text())
    assert list(saved)[:3] == ["cohort", "grading_scale", "rows_read"]
    assert saved["cohort"] == str(hand_cohort) and saved["grading_scale"] == config.cohort.grading_scale
    pure = ingest.run(config, read_cohort(hand_cohort))
    assert {k: v for k, v in saved.items() if k != "cohort"} == json.loads(json.dumps(pure.report))
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "interim" / "measurements.parquet"),
                                  pure.tables["measurements"])


def test_a_sink_without_chunk_rows_gets_the_whole_accepted_table_once(hand_cohort):
    """What ``crs ingest`` uses to write the measurements while the other tables are validated."""
    plain = ingest_cohort(hand_cohort)
    handed: list[pd.DataFrame] = []
    with_sink = ingest_tables(read_cohort(hand_cohort), sink=handed.append)
    assert len(handed) == 1 and len(handed[0]) > 0
    pd.testing.assert_frame_equal(handed[0], plain.tables["measurements"])
    assert "measurements" not in with_sink.tables
    assert with_sink.report == plain.report
    pd.testing.assert_frame_equal(with_sink.quarantine, plain.quarantine)
    for name, table in with_sink.tables.items():
        pd.testing.assert_frame_equal(table, plain.tables[name])
    with pytest.raises(ValueError, match="chunk_rows needs a sink"):
        ingest_tables(read_cohort(hand_cohort), chunk_rows=10)


def test_measurements_file_keeps_statistics_only_where_they_can_skip_row_groups(hand_cohort, tmp_path):
    import pyarrow.parquet as pq

    config = Config(paths=PathsConfig(interim_dir=tmp_path / "interim", ingest_report=tmp_path / "ingest.json"))
    ingest.main(config, cohort=hand_cohort)
    meta = pq.read_metadata(tmp_path / "interim" / "measurements.parquet").row_group(0)
    columns = {meta.column(i).path_in_schema: meta.column(i) for i in range(meta.num_columns)}
    assert {"analyte", "unit", "censoring"} <= set(columns)
    for name, column in columns.items():
        has_range = column.is_stats_set and column.statistics.has_min_max
        assert has_range == (name not in ("analyte", "unit", "censoring")), name
    assert not columns["hours_since_anchor"].has_dictionary_page  # mostly distinct: plain pages
    assert all(columns[name].has_dictionary_page for name in ("patient_id", "analyte", "unit", "censoring", "value"))


def test_a_failed_measurements_write_leaves_no_output(hand_cohort, tmp_path, monkeypatch):
    def broken(frame: pd.DataFrame, path: Path) -> None:
        path.write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(ingest, "_write_measurements", broken)
    out = tmp_path / "interim"
    with pytest.raises(OSError, match="disk full"):
        ingest.run_to(Config(), read_cohort(hand_cohort), out)
    assert not out.exists() and list(tmp_path.iterdir()) == [hand_cohort]


REPO = Path(__file__).resolve().parents[2]


def test_cli_bad_input_exits_with_one_line_and_writes_nothing(cohort_writer, tmp_path):
    cohort = cohort_writer({"patients": "patient_id\nA", "measurements": "patient_id,time,analyte,unit\nA,1,CRP,mg/L",
                            "events": "patient_id,event,grade,time\nA,CRS,1,3"})
    out, report = tmp_path / "interim", tmp_path / "ingest.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "ingest", "-p", str(REPO / "params.yaml"), "--cohort", str(cohort),
         "--out", str(out), "--report", str(report)],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert "missing required column 'value'" in proc.stderr
    assert not out.exists() and not report.exists()
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temp leftovers


def test_cli_writes_outputs_atomically(hand_cohort, tmp_path):
    out, report = tmp_path / "interim", tmp_path / "ingest.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "ingest", "-p", str(REPO / "params.yaml"), "--cohort",
         str(hand_cohort), "--out", str(out), "--report", str(report)],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "events.parquet", "measurements.parquet", "observations.parquet", "patients.parquet", "quarantine.csv",
        "treatments.parquet",
    ]
    saved = json.loads(report.read_text())
    assert saved["rows_quarantined"] == len(pd.read_csv(out / "quarantine.csv"))


# ----------------------------------------------------------------------------------------------
# Invariant: rows read = accepted + quarantined + duplicates dropped, for any mix of rows.
# ----------------------------------------------------------------------------------------------
_IDS = st.sampled_from(["A", "B", "C", "ZZ", "", " A "])
_TIMES = st.sampled_from(["2024-01-01T00:00:00", "2024-01-01T06:30:00", "2024-01-02T00:00:00", "2023-12-30T10:00:00",
                          "01/02/2024", "", "2024-02-30T00:00:00"])
_ANALYTES = st.sampled_from(["CRP", "crp", "IL-6", "Interleukin 6", "PLT", "Creatinine", "KL-6", "", "TEMP"])
_VALUES = st.sampled_from(["1", "2.5", "<1.5", "<= 2", ">5000", "-3", "1e9", "hemolyzed", "", "NA", "0", "37.5"])
_UNITS = st.sampled_from(["mg/L", "mg/dL", "pg/mL", "10^9/L", "umol/L", "C", "F", "", "furlongs"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(_IDS, _TIMES, _ANALYTES, _VALUES, _UNITS), min_size=1, max_size=40))
def test_counts_always_reconcile(tmp_path_factory, rows):
    cohort = tmp_path_factory.mktemp("h")
    (cohort / "patients.csv").write_text("patient_id,anchor_time\nA,2024-01-01T00:00:00\nB,2024-01-01T12:00:00\nC,\n")
    pd.DataFrame(rows, columns=["patient_id", "time", "analyte", "value", "unit"]).to_csv(
        cohort / "measurements.csv", index=False
    )
    (cohort / "events.csv").write_text("patient_id,event,grade,time\nA,CRS,1,2024-01-01T10:00:00\n")
    result = ingest_cohort(cohort)
    report = result.report
    for counts in [report, *report["files"].values()]:
        assert counts["rows_read"] == counts["rows_accepted"] + counts["rows_quarantined"] + counts["duplicates_dropped"]
    m = report["files"]["measurements"]
    assert m["rows_read"] == len(rows)
    assert m["rows_accepted"] == len(result.tables["measurements"])
    quarantined_lines = result.quarantine.loc[result.quarantine["source_file"].str.endswith("measurements.csv"), "source_line"]
    assert quarantined_lines.is_unique
    assert sum(report["quarantine_by_reason"].values()) == report["rows_quarantined"]
    accepted = result.tables["measurements"]
    assert accepted["hours_since_anchor"].notna().all()
    assert set(accepted["censoring"]) <= {"none", "left", "right"}
    known = accepted[accepted["known_analyte"]]
    assert (known["value"] >= 0).all()


def test_stray_word_in_a_numeric_covariate_blanks_one_cell(cohort_writer):
    # Issue 12: one "unknown" age used to turn the whole column into text (and crash page rendering).
    ages = "\n".join(f"P{i},{50 + i},F" for i in range(12))
    cohort = cohort_writer({
        "patients": f"patient_id,age,sex\n{ages}\nP99,unknown,M",
        "measurements": "patient_id,time,analyte,value,unit\nP1,1,CRP,3,mg/L",
        "events": "patient_id,event,grade,time\nP1,CRS,1,3",
    })
    result = ingest_cohort(cohort)
    report = result.report
    assert report["covariate_types"] == {"age": "numeric", "sex": "text"}
    patients = result.tables["patients"].set_index("patient_id")
    assert patients["age"].dtype == "float64" and np.isnan(patients.loc["P99", "age"])  # the patient is kept
    assert patients.loc["P3", "age"] == 53.0
    cell = result.quarantine[result.quarantine["source_column"].notna()]
    assert cell[["source_line", "source_column", "reason", "patient_id"]].values.tolist() == [
        [14, "age", "unparseable_value", "P99"]
    ]
    assert report["cells_quarantined"] == 1 and report["files"]["patients"]["cells_quarantined"] == 1
    assert report["rows_quarantined"] == 0 and report["patients"] == 13
    (warning,) = report["warnings"]
    assert "column 'age'" in warning and "line 14" in warning and "unknown" not in warning
