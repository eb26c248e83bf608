"""Small cohorts with awkward rows, and the outputs the ingest code of commit 691ebd1 produced for them.

``golden/<case>/`` holds the cohort (``cohort/``) and what ``crs ingest`` wrote for it before the
issue-14 speed work (``out/``, ``ingest.json``), recorded by running this module against that commit:

    git archive 691ebd1 | tar -x -C /tmp/old
    cd tests/pipeline/ingestion/golden/<case> && PYTHONPATH=/tmp/old python -m tests.pipeline.ingestion.awkward

(run from the case folder with the repository on ``sys.path``: paths in the outputs are relative).
The rows cover mixed time forms, padded ids, exact and conflicting duplicates, unit-normalised
repeats, censored values, missing-value tokens, unknown analytes and units, unknown patients and
patients without an anchor. Old ingest sorted ties in (patient, time) with an unstable argsort, so the
unsorted case has no such ties among accepted rows, and the sorted case (panels at one time) is
given in (patient, time) order.

``out/treatments.parquet`` (these cohorts have no treatments file: the empty accepted table) was
re-recorded when accepted treatments gained ``end_hours_since_anchor``; ``out/observations.parquet`` (the
empty accepted table) added with the observations table; ``out/measurements.parquet`` and ``ingest.json``
of ``unsorted`` and ``sorted_panels`` re-recorded when a date without a time of day stopped being read
as midnight (issue 11): in each, the one date-only row moved to 23:59:59 of its day (the end of the day,
when the result is known at the latest) and ``date_only_times`` counts it; every other value is as recorded.
``out/measurements.parquet`` of every case re-recorded when the writer stopped writing min/max statistics
of ``analyte``, ``unit`` and ``censoring`` and a dictionary for the hours (2026-12-03): table and schema
checked equal to the recorded ones before replacing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

CASES = ("unsorted", "sorted_panels", "hours")
_ANALYTES = [("CRP", "mg/L", 5.0), ("C-reactive protein", "mg/dL", 0.5), ("Ferritin", "ng/mL", 800.0),
             ("IL-6", "pg/mL", 20.0), ("PLT", "10^9/L", 150.0), ("Creatinine", "umol/L", 80.0),
             ("Temperature", "F", 99.0), ("LDH", "U/L", 250.0), ("Mystery marker", "AU", 3.0)]
_ODD_VALUES = ["<2.0", "< 2", ">100000", "≤3", ">= 5", "hemolyzed", "", "NA", "null", ".", "inf", "-Infinity",
               "1e400", "  12.5 ", "+3", "-5", ".5", "5.", "1e3", "nan", "<", "<=x", "1,5"]
_ODD_TIMES = ["2024-01-03 12:00:00", "2024-01-03T12:00:00Z", "2024-01-03T12:00:00+02:00", "2024-01-03T12:00",
              "2024-01-03", "2024-01-03T12:00:00.250", "05/01/2024 10:00", "garbage", "", "  2024-01-03T12:00:00 ",
              "2024-02-30T00:00:00", "2024-01-03T24:00:00", "2024-01-03T23:59:60", "1500-01-01T00:00:00",
              "2024-1-3T12:00:00", "2024-01-03T12:00:00-0530", "20240103T120000", "2024-01-03T12", "12.5"]
_ODD_UNITS = ["bananas", "", "MG/L", " mg/l ", "mg / L"]


def _patients(rng: np.random.Generator, n: int) -> pd.DataFrame:
    ids = [f"P{i:03d}" for i in range(n)]
    anchors = (np.datetime64("2024-01-01T08:00:00") + rng.integers(0, 240, n) * np.timedelta64(1, "h"))
    anchor_text = np.datetime_as_string(anchors, unit="s").astype(object)
    anchor_text[3] = ""  # no anchor: its timestamps are bad_time
    anchor_text[5] = "garbage"  # quarantined patient: its rows are unknown_patient
    frame = pd.DataFrame({"patient_id": ids, "anchor_time": anchor_text, "age": rng.integers(20, 85, n)})
    return pd.concat([frame, frame.iloc[[7]]]).iloc[rng.permutation(n + 1)]  # an exact duplicate, shuffled


def _clean_rows(rng: np.random.Generator, patients: pd.DataFrame, n: int, panels: bool) -> pd.DataFrame:
    """Good rows: distinct seconds per row (no ties), or panels of analytes sharing one time."""
    pids = patients.drop_duplicates()["patient_id"].to_numpy()
    anchors = pd.to_datetime(patients.drop_duplicates().set_index("patient_id")["anchor_time"], errors="coerce")
    a = rng.integers(0, len(_ANALYTES), n)
    if panels:
        a = np.arange(n) % len(_ANALYTES)
        slot = np.arange(n) // len(_ANALYTES)
        p = pids[slot % len(pids)]
        offset = (slot // len(pids)) * 3600 * 6 + 60
    else:
        p = pids[rng.integers(0, len(pids), n)]
        offset = rng.permutation(n) * 37 - 3600 * 24
    base = anchors.reindex(p).fillna(pd.Timestamp("2024-01-01")).to_numpy()
    stamps = np.datetime_as_string(base + offset.astype("timedelta64[s]"), unit="s")
    level = np.array([x[2] for x in _ANALYTES])[a] * np.exp(rng.normal(0, 0.5, n))
    return pd.DataFrame({"patient_id": p, "time": stamps, "analyte": np.array([x[0] for x in _ANALYTES])[a],
                         "value": np.char.mod("%.4g", level), "unit": np.array([x[1] for x in _ANALYTES])[a]})


def _awkward(rng: np.random.Generator, clean: pd.DataFrame) -> pd.DataFrame:
    """Copies of clean rows with one field spoilt, plus exact, conflicting and unit-normalised repeats."""
    def pick(k: int) -> pd.DataFrame:
        return clean.iloc[rng.integers(0, len(clean), k)].copy()

    def own_time(rows: pd.DataFrame) -> pd.DataFrame:  # a second of its own: judged alone, no tie
        shift = (np.arange(len(rows)) % 36 + 1).astype("timedelta64[s]")
        rows["time"] = np.datetime_as_string(pd.to_datetime(rows["time"]).to_numpy() + shift, unit="s")
        return rows

    odd = []
    for column, choices in (("value", _ODD_VALUES), ("unit", _ODD_UNITS)):
        rows = own_time(pick(len(choices) * 2))
        rows[column] = choices * 2
        odd.append(rows)
    times = clean.drop_duplicates("patient_id").head(len(_ODD_TIMES)).copy()  # one per patient: no tie
    times["time"] = _ODD_TIMES[: len(times)]
    odd.append(times)
    ids = own_time(pick(6))
    ids["patient_id"] = [" P001", "P001 ", "", "P999", "p001", "P005"]
    odd.append(ids)
    odd.append(pick(5))  # exact duplicates
    conflict = pick(5)
    conflict["value"] = "7777"
    odd.append(conflict)
    crp = clean[clean["analyte"] == "CRP"].head(3).copy()  # same CRP again in mg/dL: a redundant copy
    crp["value"] = (crp["value"].astype(float) / 10).map("{:g}".format)
    crp["unit"] = "mg/dL"
    odd.append(crp)
    return pd.concat(odd)


def make_case(case: str, directory: Path) -> None:
    """Write cohort ``case`` (one of :data:`CASES`) into ``directory``."""
    rng = np.random.default_rng(CASES.index(case) + 14)
    directory.mkdir(parents=True, exist_ok=True)
    patients = _patients(rng, 30)
    clean = _clean_rows(rng, patients, 900, panels=case == "sorted_panels")
    measurements = pd.concat([clean, _awkward(rng, clean)])
    if case == "hours":
        hours = rng.normal(48, 40, len(measurements)).round(6).astype(str).astype(object)
        hours[rng.random(len(hours)) < 0.02] = "2024-01-03T12:00:00"
        hours[rng.random(len(hours)) < 0.01] = "1e39"
        measurements["time"] = hours
    if case == "sorted_panels":  # in (patient, time) order as ingest reads them
        key = pd.DataFrame({"p": measurements["patient_id"].str.strip(), "t": pd.to_datetime(
            measurements["time"].str.strip(), format="ISO8601", errors="coerce", utc=True)})
        measurements = measurements.iloc[np.lexsort((key["t"].to_numpy(), key["p"].to_numpy()))]
    else:
        measurements = measurements.iloc[rng.permutation(len(measurements))]
    patients.to_csv(directory / "patients.csv", index=False)
    measurements.to_csv(directory / "measurements.csv", index=False)
    pids = patients["patient_id"].to_numpy()[:8]
    events = pd.DataFrame({"patient_id": list(pids) + [pids[0], "P999"], "event": ["CRS"] * 8 + ["CRS", "ICANS"],
                           "grade": ["2", "Grade 3", "G1", "iv", "0", "7", "", "1", "3", "2"],
                           "time": ["2024-01-05T00:00:00"] * 10 if case != "hours" else ["30.5"] * 10})
    events.to_csv(directory / "events.csv", index=False)


def record(case_dir: Path) -> None:
    """Run ``crs ingest`` (whatever ``pipeline`` is importable) on ``case_dir/cohort`` with relative paths."""
    from pipeline.config import Config
    from pipeline.ingest import main

    main(Config(), cohort=Path("cohort"), out=Path("out"), report=Path("ingest.json"))


if __name__ == "__main__":
    record(Path("."))
