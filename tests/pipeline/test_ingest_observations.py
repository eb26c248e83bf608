"""Ingest of the inputs ASTCT grading reads (docs/grading.md): the optional ``observations`` table,
treatments' ``end_time`` and vitals through the analyte registry. Small hand-built cohorts: every
number below can be checked by reading the rows."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import cohort, ingest
from pipeline.adapters.canonical import read_cohort
from pipeline.config import Config, PathsConfig
from pipeline.errors import UserError
from pipeline.ingestion import empty_observations, empty_treatments, ingest_tables
from pipeline.ingestion.tables import SHARE_HINTS

PATIENTS = """
patient_id,anchor_time,age
P1,2024-01-01T00:00:00,60
P2,2024-01-01T00:00:00,8
"""
MEASUREMENTS = """
patient_id,time,analyte,value,unit
P1,1,SBP,120,mm[Hg]
P1,1,FiO2,0.4,fraction
P1,2,FIO2,0.5,1
P1,2,Systolic BP,85,mmHg
P1,3,HR,80,bpm
P1,3,SpO2,95,%
P1,3,O2 flow,4,l/min
P1,3,Respiratory rate,18,breaths/min
P1,4,FIO2,0.4,%
P1,4,MAP,60,mm Hg
"""
EVENTS = """
patient_id,event,grade,time
P1,CRS,1,3
"""
#: Line numbers (header = 1) in the comments.
OBSERVATIONS = """
patient_id,time,item,value
P1,1,O2 device,HFNC
P1,2,oxygen device,NRB
P1,3,O2_DEVICE,jetpack
P1,4,LOC,Drowsy
P1,5,consciousness,grumpy
P1,6,ICE,11
P1,7,ICE,7.5
P1,8,ICE score,not assessable
P1,9,ICE,7.0
P1,9,ICE_SCORE,7
P1,10,ICE,8
P1,10,ICE,9
P1,11,mood,happy
P1,1,O2 device,HFNC
P2,1,CAPD,12
P9,1,ICE,10
P1,12,ICE,abc
P1,13,SEIZURE,none
"""
# line 2  accepted O2_DEVICE high_flow_nasal_cannula      line 11 same as line 10 once read: dropped
# line 3  accepted O2_DEVICE non_rebreather               line 12, 13 ICE 8 and 9 at 10 h: conflict
# line 4  unknown_term (device)                           line 14 unknown_term (item)
# line 5  accepted CONSCIOUSNESS wakes_spontaneously      line 15 exact duplicate of line 2: dropped
# line 6  unknown_term (consciousness)                    line 16 accepted CAPD_SCORE 12
# line 7  out_of_range (ICE 11)                           line 17 unknown_patient
# line 8  unparseable_value (ICE 7.5)                     line 18 unparseable_value (ICE abc)
# line 9  accepted ICE_SCORE not_assessable               line 19 accepted SEIZURE none
# line 10 accepted ICE_SCORE 7
TREATMENTS = """
patient_id,time,drug,dose,unit,end_time
P1,2,norepinephrine,0.1,ug/kg/min,8
P1,5,Levophed,0.05,ug/kg/min,
P1,,vasopressin,0.03,U/min,10
P1,9,phenylephrine,1,ug/kg/min,7
P1,12,dexamethasone,10,mg,soon
P1,14,tocilizumab,8,mg/kg,14
"""
#: Cell texts of the rows above that must never appear in a message, detail or the report.
CELL_TEXTS = ("jetpack", "grumpy", "mood", "happy", "7.5", "abc", "soon")


def _tables(**extra: str) -> dict[str, str]:
    return {"patients": PATIENTS, "measurements": MEASUREMENTS, "events": EVENTS, **extra}


@pytest.fixture
def full_cohort(cohort_writer) -> Path:
    return cohort_writer(_tables(observations=OBSERVATIONS, treatments=TREATMENTS))


def _reasons(result, table: str) -> dict[int, str]:
    q = result.quarantine
    rows = q[q["source_file"].astype(str).str.endswith(f"{table}.csv")]
    return {int(line): reason for line, reason in rows[["source_line", "reason"]].itertuples(index=False)}


def test_unknown_term_is_a_reason_after_unknown_unit_with_a_hint():
    assert cohort.REASONS.index("unknown_term") == cohort.REASONS.index("unknown_unit") + 1
    assert set(SHARE_HINTS) == set(cohort.REASONS)
    assert cohort.OBSERVATIONS in cohort.TABLES and not cohort.OBSERVATIONS.required
    assert cohort.OBSERVATIONS.required_columns == ("patient_id", "time", "item", "value")


def test_observations_reasons_by_line(full_cohort):
    result = ingest_tables(read_cohort(full_cohort))
    assert _reasons(result, "observations") == {
        4: "unknown_term",
        6: "unknown_term",
        7: "out_of_range",
        8: "unparseable_value",
        12: "conflicting_duplicate",
        13: "conflicting_duplicate",
        14: "unknown_term",
        17: "unknown_patient",
        18: "unparseable_value",
    }


def test_observations_accepted_table(full_cohort):
    table = ingest_tables(read_cohort(full_cohort)).tables["observations"]
    assert list(table.columns) == ["patient_id", "hours_since_anchor", "item", "value", "score"]
    assert {c: str(t) for c, t in table.dtypes.items()} == {
        "patient_id": "string", "hours_since_anchor": "float64", "item": "string", "value": "string",
        "score": "float64",
    }
    rows = [(p, h, i, v, None if math.isnan(s) else s) for p, h, i, v, s in table.itertuples(index=False)]
    assert rows == [
        ("P1", 1.0, "O2_DEVICE", "high_flow_nasal_cannula", None),
        ("P1", 2.0, "O2_DEVICE", "non_rebreather", None),
        ("P1", 4.0, "CONSCIOUSNESS", "wakes_spontaneously", None),
        ("P1", 8.0, "ICE_SCORE", "not_assessable", None),
        ("P1", 9.0, "ICE_SCORE", "7", 7.0),
        ("P1", 13.0, "SEIZURE", "none", None),
        ("P2", 1.0, "CAPD_SCORE", "12", 12.0),
    ]


def test_observations_counts_reconcile_and_report_entry(full_cohort):
    report = ingest_tables(read_cohort(full_cohort)).report
    obs = report["files"]["observations"]
    assert obs["path"].endswith("observations.csv")
    assert (obs["rows_read"], obs["rows_accepted"], obs["rows_quarantined"], obs["duplicates_dropped"]) == (18, 7, 9, 2)
    assert obs["quarantine_by_reason"] == {
        "unknown_patient": 1, "unparseable_value": 2, "unknown_term": 3, "out_of_range": 1,
        "conflicting_duplicate": 2,
    }
    assert list(obs["quarantine_by_reason"]) == [r for r in cohort.REASONS if r in obs["quarantine_by_reason"]]
    for counts in [report, *report["files"].values()]:
        assert counts["rows_read"] == counts["rows_accepted"] + counts["rows_quarantined"] + counts["duplicates_dropped"]
    assert report["rows_read"] == 2 + 10 + 1 + 6 + 18


def test_treatments_end_time(full_cohort):
    result = ingest_tables(read_cohort(full_cohort))
    assert _reasons(result, "treatments") == {4: "bad_time", 5: "out_of_range", 6: "bad_time"}
    q = result.quarantine.set_index("source_line")
    treatments_q = q[q["source_file"].astype(str).str.endswith("treatments.csv")]
    assert treatments_q.loc[5, "detail"] == "end_time before time"
    t = result.tables["treatments"]
    assert list(t.columns) == ["patient_id", "hours_since_anchor", "drug", "dose", "unit", "end_hours_since_anchor"]
    assert str(t["end_hours_since_anchor"].dtype) == "float64"
    assert t["drug"].tolist() == ["norepinephrine", "norepinephrine", "tocilizumab"]
    assert t["hours_since_anchor"].tolist() == [2.0, 5.0, 14.0]
    end = t["end_hours_since_anchor"].tolist()
    assert end[0] == 8.0 and math.isnan(end[1]) and end[2] == 14.0  # an end equal to the start is fine
    counts = result.report["files"]["treatments"]
    assert (counts["rows_read"], counts["rows_accepted"], counts["rows_quarantined"]) == (6, 3, 3)


def test_treatments_end_time_as_timestamps(cohort_writer):
    treatments = """
patient_id,time,drug,end_time
P1,2024-01-01T02:00:00,norepinephrine,2024-01-01T08:30:00
P1,2024-01-01T03:00:00,vasopressin,
P1,2024-01-01T04:00:00,epinephrine,2024-01-01T01:00:00
P1,2024-01-01T05:00:00,dopamine,yesterday
"""
    result = ingest_tables(read_cohort(cohort_writer(_tables(treatments=treatments))))
    t = result.tables["treatments"]
    assert t["drug"].tolist() == ["norepinephrine", "vasopressin"]
    assert t["end_hours_since_anchor"].iloc[0] == 8.5 and math.isnan(t["end_hours_since_anchor"].iloc[1])
    assert _reasons(result, "treatments") == {4: "out_of_range", 5: "bad_time"}


def test_treatments_without_end_time_column_keep_their_outputs(cohort_writer):
    treatments = "patient_id,time,drug,dose,unit\nP1,2,norepinephrine,0.1,ug/kg/min\nP1,2,norepinephrine,0.2,ug/kg/min"
    result = ingest_tables(read_cohort(cohort_writer(_tables(treatments=treatments))))
    assert result.tables["treatments"].empty
    assert np.isnan(result.tables["treatments"]["end_hours_since_anchor"]).all()
    q = result.quarantine
    details = set(q.loc[q["source_file"].astype(str).str.endswith("treatments.csv"), "detail"])
    assert details == {"same patient, time and drug with a different dose"}
    assert list(empty_treatments().columns) == list(result.tables["treatments"].columns)


def test_messages_and_report_quote_no_cell_value(full_cohort):
    result = ingest_tables(read_cohort(full_cohort))
    report = json.dumps(result.report)
    details = " ".join(result.quarantine["detail"].astype(str))
    for text in CELL_TEXTS:
        assert text not in details, text
        assert f'"{text}' not in report, text


def test_without_observations_the_table_is_empty_and_the_report_unchanged(cohort_writer):
    without = ingest_tables(read_cohort(cohort_writer(_tables(treatments=TREATMENTS), "without"))).report
    result = ingest_tables(read_cohort(cohort_writer(_tables(treatments=TREATMENTS, observations=OBSERVATIONS))))
    table = result.tables["observations"]
    empty = ingest_tables(read_cohort(cohort_writer(_tables(treatments=TREATMENTS), "again"))).tables["observations"]
    pd.testing.assert_frame_equal(empty, empty_observations())
    assert len(table) == 7
    assert "observations" not in without["files"]
    assert list(without) == list(result.report)  # same keys, same order
    files = {k: v for k, v in result.report["files"].items() if k != "observations"}
    assert json.dumps(without["files"]).replace("/without/", "/cohort/") == json.dumps(files)
    for key in ("patients", "patients_with_measurements", "covariate_types", "analytes_found", "unknown_analytes",
                "unit_conversions", "synonyms_mapped"):
        assert without[key] == result.report[key], key


def test_an_empty_observations_file_is_allowed(cohort_writer):
    result = ingest_tables(read_cohort(cohort_writer(_tables(observations="patient_id,time,item,value"))))
    assert result.tables["observations"].empty
    assert result.report["files"]["observations"]["rows_read"] == 0


def test_observations_missing_a_required_column_is_a_file_error(cohort_writer):
    with pytest.raises(UserError, match="missing required column 'item'"):
        read_cohort(cohort_writer(_tables(observations="patient_id,time,value\nP1,1,HFNC")))


def test_stage_writes_observations_parquet_either_way(cohort_writer, tmp_path):
    for name, tables in (("with", _tables(observations=OBSERVATIONS)), ("without", _tables())):
        config = Config(paths=PathsConfig(interim_dir=tmp_path / name / "interim",
                                          ingest_report=tmp_path / name / "ingest.json"))
        ingest.main(config, cohort=cohort_writer(tables, f"cohort_{name}"))
        written = pd.read_parquet(tmp_path / name / "interim" / "observations.parquet")
        assert list(written.columns) == ["patient_id", "hours_since_anchor", "item", "value", "score"]
        assert len(written) == (7 if name == "with" else 0)
        report = json.loads((tmp_path / name / "ingest.json").read_text())
        assert ("observations" in report["files"]) == (name == "with")
        assert ("observations" in report["csv_dialects"]) == (name == "with")


def test_vitals_through_the_registry(full_cohort):
    result = ingest_tables(read_cohort(full_cohort))
    m = result.tables["measurements"]
    got = {(h, a): (v, u) for h, a, v, u in m[["hours_since_anchor", "analyte", "value", "unit"]].itertuples(index=False)}
    assert got == {
        (1.0, "SBP"): (120.0, "mmHg"),          # mm[Hg]
        (1.0, "FIO2"): (40.0, "%"),             # 0.4 as a fraction
        (2.0, "FIO2"): (50.0, "%"),             # 0.5 with unit "1"
        (2.0, "SBP"): (85.0, "mmHg"),
        (3.0, "HR"): (80.0, "/min"),            # bpm
        (3.0, "SPO2"): (95.0, "%"),
        (3.0, "O2_FLOW"): (4.0, "L/min"),       # l/min
        (3.0, "RR"): (18.0, "/min"),            # breaths/min
        (4.0, "MAP"): (60.0, "mmHg"),           # "mm Hg"
    }
    assert m["known_analyte"].all()
    assert _reasons(result, "measurements") == {10: "out_of_range"}  # FiO2 0.4 % (a fraction labelled %)
    assert result.report["unit_conversions"]["FIO2: fraction -> %"] == 1


@pytest.mark.parametrize(("name", "code"), [
    ("8480-6", "SBP"), ("SYSBP", "SBP"), ("8462-4", "DBP"), ("DIABP", "DBP"), ("8478-0", "MAP"),
    ("8867-4", "HR"), ("pulse", "HR"), ("59408-5", "SPO2"), ("2708-6", "SPO2"), ("OXYSAT", "SPO2"),
    ("3151-8", "O2_FLOW"), ("3150-0", "FIO2"), ("9279-1", "RR"), ("RESP", "RR"),
])
def test_vital_codes(name, code):
    from pipeline.registry import load_registry, normalize_name

    assert load_registry().synonyms[normalize_name(name)] == code
