"""Date-only and partial ISO 8601 times (SDTM --DTC allows them) are placed explicitly, never read as
midnight: a measurement, dose or observation at the end of its day (known by then at the latest), an
event onset at the start of its day (the earliest it can have begun); a year or month alone is
quarantined. Counted per file in reports/ingest.json (``date_only_times``)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.adapters.canonical import read_cohort
from pipeline.ingestion import ingest_tables

PATIENTS = "patient_id,anchor_time\nA,2024-01-03T10:00:00\n"


def _ingest(cohort_writer, measurements: str, events: str, treatments: str = ""):
    tables = {"patients": PATIENTS, "measurements": measurements, "events": events}
    if treatments:
        tables["treatments"] = treatments
    return ingest_tables(read_cohort(cohort_writer(tables)))


def test_a_date_alone_is_the_end_of_its_day_for_results_and_the_start_for_onsets(cohort_writer):
    result = _ingest(
        cohort_writer,
        "patient_id,time,analyte,value,unit\nA,2024-01-04,CRP,12,mg/L\nA,2024-01-04T06:00:00,CRP,10,mg/L\n",
        "patient_id,event,grade,time\nA,CRS,2,2024-01-04\n",
        "patient_id,time,drug\nA,2024-01-04,tocilizumab\n",
    )
    m = result.tables["measurements"].set_index("value")["hours_since_anchor"]
    assert m[12.0] == pytest.approx(14 + 23 + 59 / 60 + 59 / 3600)  # 2024-01-04 23:59:59, not 00:00
    assert m[10.0] == pytest.approx(20.0)  # a full timestamp is unchanged
    assert result.tables["events"]["hours_since_anchor"].tolist() == [14.0]  # 2024-01-04 00:00, start of day
    assert result.tables["treatments"]["hours_since_anchor"].tolist() == pytest.approx([14 + 23 + 59 / 60 + 59 / 3600])
    files = result.report["files"]
    assert files["measurements"]["date_only_times"] == 1 and files["events"]["date_only_times"] == 1
    assert files["treatments"]["date_only_times"] == 1


def test_a_year_or_month_alone_is_quarantined(cohort_writer):
    result = _ingest(
        cohort_writer,
        "patient_id,time,analyte,value,unit\nA,2024-01,CRP,12,mg/L\nA,2024,CRP,11,mg/L\nA,2024-01-04T06:00:00,CRP,10,mg/L\n",
        "patient_id,event,grade,time\nA,CRS,2,2024-01-04T08:00:00\n",
    )
    q = result.quarantine
    assert len(result.tables["measurements"]) == 1 and len(q) == 2
    assert set(q["reason"]) == {"bad_time"} and q["detail"].str.startswith("partial date").all()
    assert "date_only_times" not in result.report["files"]["measurements"]


def test_result_time_is_kept_and_checked(cohort_writer):
    """Optional ``result_time``: when a result was known. Before its sample: out_of_range; unreadable:
    bad_time; empty: NaN (known when sampled)."""
    result = _ingest(
        cohort_writer,
        "patient_id,time,analyte,value,unit,result_time\n"
        "A,2024-01-04T06:00:00,IL6,50,pg/mL,2024-01-06T06:00:00\n"
        "A,2024-01-04T07:00:00,CRP,10,mg/L,\n"
        "A,2024-01-04T08:00:00,IL6,60,pg/mL,2024-01-03T08:00:00\n"
        "A,2024-01-04T09:00:00,IL6,70,pg/mL,soon\n",
        "patient_id,event,grade,time\nA,CRS,1,2024-01-04T08:00:00\n",
    )
    m = result.tables["measurements"]
    assert m["value"].tolist() == [50.0, 10.0]
    assert m["result_hours_since_anchor"].iloc[0] == 68.0 and np.isnan(m["result_hours_since_anchor"].iloc[1])
    q = result.quarantine.set_index("value")
    assert q.loc["60", "reason"] == "out_of_range" and q.loc["70", "reason"] == "bad_time"


def test_without_result_time_the_measurements_have_no_such_column(cohort_writer):
    result = _ingest(cohort_writer, "patient_id,time,analyte,value,unit\nA,2024-01-04T06:00:00,IL6,50,pg/mL\n",
                     "patient_id,event,grade,time\nA,CRS,1,2024-01-04T08:00:00\n")
    assert "result_hours_since_anchor" not in result.tables["measurements"].columns


def test_follow_up_end_in_hours_or_iso(cohort_writer):
    """``follow_up_end``: hours since anchor or an ISO 8601 time; unreadable: the patient is quarantined
    (bad_time), as for a bad anchor_time; it is never a covariate."""
    patients = ("patient_id,anchor_time,follow_up_end,age\nA,2024-01-03T10:00:00,240,50\n"
                "B,2024-01-03T10:00:00,2024-01-13T10:00:00,60\nC,2024-01-03T10:00:00,someday,70\n"
                "D,2024-01-03T10:00:00,2024-01-13,80\n")
    cohort = cohort_writer({"patients": patients,
                            "measurements": "patient_id,time,analyte,value,unit\nA,1,CRP,5,mg/L\n",
                            "events": "patient_id,event,grade,time\nA,CRS,1,2\n"})
    result = ingest_tables(read_cohort(cohort))
    p = result.tables["patients"].set_index("patient_id")
    assert p.loc["A", "follow_up_end_hours"] == 240.0 and p.loc["B", "follow_up_end_hours"] == 240.0
    assert p.loc["D", "follow_up_end_hours"] == pytest.approx(230.0 + 86_399 / 3600)  # a date: through its end
    assert "C" not in p.index and result.quarantine["reason"].tolist() == ["bad_time"]
    assert "follow_up_end" not in result.report["covariate_types"]
    assert "follow_up_end_hours" not in result.report["covariate_types"]


def test_lymphodepletion_start_is_a_time_not_a_covariate(cohort_writer):
    patients = ("patient_id,anchor_time,lymphodepletion_start\nA,2024-01-03T10:00:00,2023-12-29T10:00:00\n"
                "B,2024-01-03T10:00:00,-96\nC,2024-01-03T10:00:00,2023-12-30\n")
    cohort = cohort_writer({"patients": patients,
                            "measurements": "patient_id,time,analyte,value,unit\nA,1,CRP,5,mg/L\n",
                            "events": "patient_id,event,grade,time\nA,CRS,1,2\n"})
    result = ingest_tables(read_cohort(cohort))
    assert result.tables["patients"]["lymphodepletion_start_hours"].tolist() == [-120.0, -96.0, -106.0]  # C: day start
    assert result.report["covariate_types"] == {}
