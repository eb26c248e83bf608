"""Every CSV the project writes neutralises cells a spreadsheet would run as a formula (OWASP rule)."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from pipeline import ingest
from pipeline.config import Config, PathsConfig
from pipeline.io import neutralise_formulas, neutralise_formulas_arrow, to_csv

DANGEROUS = ["=HYPERLINK(\"http://x\",\"y\")", "+1+1", "-1+2", "@SUM(A1)", "\tcmd", "\rcmd", "=1"]
HARMLESS = ["-5.5", "+3", "-1e3", ".5", "P001", "a=b", "", "<2.0"]


def _cells(path: Path) -> list[str]:
    with path.open(newline="") as handle:
        return [cell for row in csv.reader(handle) for cell in row]


def test_formula_cells_get_an_apostrophe_and_numbers_stay_numbers():
    frame = pd.DataFrame({"text": DANGEROUS + HARMLESS, "number": range(len(DANGEROUS + HARMLESS))})
    safe = neutralise_formulas(frame)
    assert safe["text"].tolist() == [f"'{c}" for c in DANGEROUS] + HARMLESS
    assert safe["number"].tolist() == frame["number"].tolist()
    arrow = neutralise_formulas_arrow(pa.Table.from_pandas(frame, preserve_index=False))
    assert arrow.column("text").to_pylist() == safe["text"].tolist()


def test_headers_are_neutralised_too():
    safe = neutralise_formulas(pd.DataFrame({"=cmd": [1], "ok": [2]}))
    assert list(safe.columns) == ["'=cmd", "ok"]


@given(st.lists(st.text(max_size=12), min_size=1, max_size=20))
def test_no_written_cell_starts_a_formula(texts):
    frame = pd.DataFrame({"value": texts})
    out = neutralise_formulas(frame)["value"]
    for before, after in zip(texts, out, strict=True):
        assert after in (before, f"'{before}")
        starts_formula = after[:1] in ("=", "+", "-", "@", "\t", "\r")
        assert not starts_formula or pd.to_numeric(pd.Series([after]), errors="coerce").notna().iloc[0]


def test_quarantine_csv_from_ingest_is_safe(cohort_writer, tmp_path):
    cohort = cohort_writer({
        "patients": "patient_id,age\nP1,50",
        "measurements": "patient_id,time,analyte,value,unit\n"
                        "P1,12,CRP,=HYPERLINK(\"http://evil\"),mg/L\n=cmd|' /C calc'!A0,12,CRP,5,mg/L\n"
                        "P1,13,@evil,5,mg/L\nP1,14,CRP,-1+2,mg/L\nP1,15,CRP,-5,mg/L",
        "events": "patient_id,event,grade,time\nP1,CRS,1,20",
    })
    config = Config(paths=PathsConfig(interim_dir=tmp_path / "interim", ingest_report=tmp_path / "ingest.json"))
    ingest.main(config, cohort=cohort)
    cells = _cells(tmp_path / "interim" / ingest.QUARANTINE_FILE)
    assert any("HYPERLINK" in c for c in cells), "the bad rows are in quarantine"
    offending = [c for c in cells if c[:1] in ("=", "+", "@", "\t", "\r") or (c[:1] == "-" and not _is_number(c))]
    assert offending == []


def test_to_csv_round_trips_plain_values(tmp_path):
    frame = pd.DataFrame({"patient_id": ["P1", "P2"], "probability": [0.25, -0.5], "note": ["fine", "=1+1"]})
    to_csv(frame, tmp_path / "x.csv")
    back = pd.read_csv(tmp_path / "x.csv")
    assert back["probability"].tolist() == [0.25, -0.5] and back["note"].tolist() == ["fine", "'=1+1"]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
