"""Every row of the unit table, checked through ingest against a factor written here independently.

The expected factors come from the analytes' definitions (molar masses, SI prefixes, the Fahrenheit
scale), not from ``units.csv``; a new row in ``units.csv`` needs its own expected factor below, so a
conversion can never be added (or mistyped) without a second, independent statement of it.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest

from pipeline.adapters.canonical import read_cohort
from pipeline.ingestion import ingest_tables
from pipeline.registry import load_registry

FERRITIN_PMOL_PER_NG = 2.247  # ferritin ~445 kDa: 1 ng/mL = 2.247 pmol/L
CREATININE_UMOL_PER_MG_DL = 88.4  # 113.12 g/mol
BILIRUBIN_UMOL_PER_MG_DL = 17.104  # 584.66 g/mol
HAEMOGLOBIN_G_DL_PER_MMOL = 1.6114  # monomer 16,114.5 g/mol

#: (analyte or "*<canonical unit>", unit) -> (scale, offset) into the canonical unit.
EXPECTED = {
    ("CRP", "mg/dL"): (10, 0), ("CRP", "ug/mL"): (1, 0),
    ("FERRITIN", "ug/L"): (1, 0), ("FERRITIN", "pmol/L"): (1 / FERRITIN_PMOL_PER_NG, 0),
    ("*pg/mL", "ng/L"): (1, 0), ("*pg/mL", "ng/mL"): (1000, 0),
    ("IL2R", "kU/L"): (1, 0),  # 1 kU/L = 1000 U / 1000 mL
    ("SGP130", "ug/L"): (1, 0), ("SGP130", "pg/mL"): (1e-3, 0),
    ("*U/L", "IU/L"): (1, 0), ("*U/L", "ukat/L"): (60, 0),  # 1 ukat = 1 umol/s = 60 umol/min
    ("*10^9/L", "10^3/uL"): (1, 0), ("*10^9/L", "K/uL"): (1, 0), ("*10^9/L", "G/L"): (1, 0),
    ("*10^9/L", "10^3/mm3"): (1, 0), ("*10^9/L", "/uL"): (1e-3, 0), ("*10^9/L", "cells/uL"): (1e-3, 0),
    ("CREAT", "umol/L"): (1 / CREATININE_UMOL_PER_MG_DL, 0),
    ("CREAT", "mmol/L"): (1000 / CREATININE_UMOL_PER_MG_DL, 0),
    ("HGB", "g/L"): (0.1, 0), ("HGB", "mmol/L"): (HAEMOGLOBIN_G_DL_PER_MMOL, 0),
    ("DDIMER", "mg/L FEU"): (1, 0), ("DDIMER", "ng/mL FEU"): (1e-3, 0), ("DDIMER", "ug/L FEU"): (1e-3, 0),
    ("FIBRINOGEN", "mg/dL"): (0.01, 0),
    ("TEMP", "degC"): (1, 0), ("TEMP", "°C"): (1, 0), ("TEMP", "Cel"): (1, 0),
    ("TEMP", "F"): (5 / 9, -32 * 5 / 9), ("TEMP", "degF"): (5 / 9, -32 * 5 / 9),
    ("TEMP", "°F"): (5 / 9, -32 * 5 / 9),
    ("PCT", "ug/L"): (1, 0), ("PCT", "pg/mL"): (1e-3, 0), ("PCT", "ng/L"): (1e-3, 0),
    ("ALB", "g/dL"): (10, 0), ("ALB", "mg/dL"): (0.01, 0), ("ALB", "mg/mL"): (1, 0),
    ("BILI", "umol/L"): (1 / BILIRUBIN_UMOL_PER_MG_DL, 0), ("BILI", "mg/L"): (0.1, 0),
    ("*%", "/100 WBC"): (1, 0), ("*%", "% of WBC"): (1, 0), ("*%", "percent"): (1, 0),
    ("*mmHg", "mm[Hg]"): (1, 0),  # UCUM's spelling of mmHg
    ("HR", "bpm"): (1, 0), ("HR", "beats/min"): (1, 0), ("RR", "breaths/min"): (1, 0), ("RR", "bpm"): (1, 0),
    ("FIO2", "1"): (100, 0), ("FIO2", "fraction"): (100, 0),  # a fraction 0.21-1.0 is 21-100 %
}
#: The canonical value each analyte's test row should end up as (inside its plausible range); the raw
#: value written in the other unit is derived from it with the factor above.
TARGET_VALUE = {"TEMP": 37.5, "HGB": 10.0, "CREAT": 1.2, "LDH": 250.0, "SBP": 120.0, "DBP": 70.0, "MAP": 85.0,
                "HR": 80.0, "RR": 16.0, "SPO2": 95.0, "FIO2": 40.0}


def _raw_value(key: str, analyte: str, unit: str) -> float:
    scale, offset = EXPECTED[(key, unit)]
    return float(f"{(TARGET_VALUE.get(analyte, 2.0) - offset) / scale:.6g}")


def _unit_rows() -> list[tuple[str, str, str]]:
    """(units.csv key, the analyte exercised, unit): a ``*`` row is exercised on every analyte it covers."""
    table = _units_table()
    canonical = load_registry().canonical_units
    rows = []
    for key, unit in zip(table["analyte"], table["unit"], strict=True):
        analytes = [a for a, u in canonical.items() if f"*{u}" == key] if key.startswith("*") else [key]
        rows += [(key, analyte, unit) for analyte in analytes]
    return rows


def _units_table() -> pd.DataFrame:
    from importlib.resources import files

    return pd.read_csv(files("pipeline.registry") / "units.csv", comment="#")


def test_every_unit_row_has_an_independent_expectation():
    keys = set(zip(_units_table()["analyte"], _units_table()["unit"], strict=True))
    assert keys == set(EXPECTED), "units.csv and the independent factors above must list the same rows"


def test_every_conversion_row_through_ingest(cohort_writer):
    rows = _unit_rows()
    lines = [f"P1,{hour},{analyte},{_raw_value(key, analyte, unit)},{unit}"
             for hour, (key, analyte, unit) in enumerate(rows)]
    cohort = cohort_writer({
        "patients": "patient_id\nP1",
        "measurements": "patient_id,time,analyte,value,unit\n" + "\n".join(lines),
        "events": "patient_id,event,grade,time\nP1,CRS,0,1",
    })
    result = ingest_tables(read_cohort(cohort))
    accepted = result.tables["measurements"].set_index("hours_since_anchor")
    assert len(accepted) == len(rows), result.quarantine[["reason"]].value_counts().to_dict()
    canonical = load_registry().canonical_units
    for hour, (key, analyte, unit) in enumerate(rows):
        scale, offset = EXPECTED[(key, unit)]
        expected = _raw_value(key, analyte, unit) * scale + offset
        got = accepted.loc[float(hour)]
        assert got["analyte"] == analyte and got["unit"] == canonical[analyte], (key, unit)
        assert math.isclose(got["value"], expected, rel_tol=1e-3), (key, analyte, unit, got["value"], expected)


@pytest.mark.parametrize(("analyte", "unit", "raw", "expected"), [
    ("FERRITIN", "pmol/L", 2247.0, 1000.0),   # 1,000 ng/mL of ferritin
    ("HGB", "mmol/L", 6.2, 9.99),             # 6.2 mmol/L is about 10 g/dL
    ("CREAT", "umol/L", 88.4, 1.0),
    ("TEMP", "°F", 98.6, 37.0),
])
def test_clinical_anchor_values(cohort_writer, analyte, unit, raw, expected):
    cohort = cohort_writer({
        "patients": "patient_id\nP1",
        "measurements": f"patient_id,time,analyte,value,unit\nP1,1,{analyte},{raw},{unit}",
        "events": "patient_id,event,grade,time\nP1,CRS,0,1",
    })
    value = ingest_tables(read_cohort(cohort)).tables["measurements"]["value"].iloc[0]
    assert value == pytest.approx(expected, rel=2e-3)
