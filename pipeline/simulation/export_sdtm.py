"""The simulated cohort as CDISC SDTM domains (``.xpt`` SAS transport v5 via pyreadstat, or ``.csv``).

Written so that :func:`pipeline.adapters.sdtm.read_sdtm` + ingest gives exactly the tables the canonical
cohort gives through ingest: every text the canonical tables hold (values with their censoring signs,
units, timestamps, the injected faults) is carried verbatim.

- ``DM``: USUBJID, SITEID, AGE, SEX, ARM / ACTARM (the product's generic name), RFXSTDTC / RFSTDTC (the
  infusion), DTHFL / DTHDTC. ``SUPPDM``: DISEASE, LYMPHDEP, CARTDOSE, CARTDOSU, TUMBURD, TUMBURDU (the
  other patient columns; 8-character QNAMs the reader maps back to the harmonised names).
- ``EX``: the CAR-T infusion (EXTRT the product, EXDOSE / EXDOSU, EXSTDTC).
- ``LB`` / ``VS`` (vitals: temperature, blood pressure, SpO2, oxygen flow, FiO2): --TESTCD the registry's
  SDTM code (or its own code), --TEST the name as the site wrote it, --LOINC, --ORRES / --ORRESU, --DTC.
- ``AE``: CRS and ICANS, one record per grade change (AETOXGR; AEOUT "FATAL" and AEENDTC for grade 5).
  ``DS``: informed consent for everyone and DEATH records (DSSTDTC).
- ``CM``: tocilizumab, steroids and vasopressors (CMDOSE / CMDOSU, CMSTDTC, CMENDTC for courses).
- Observations in sponsor-defined findings domains (SDTM has no standard one for them): ``QS`` for the ICE
  and CAPD scores, ``RE`` for the oxygen device, ``NV`` for consciousness, seizures, motor weakness and
  cerebral oedema (--TESTCD / --TEST named so the observation registry knows them).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pcsv

from pipeline.registry import load_registry, normalize_name

STUDY = "CRSSIM"
#: Registry codes written to VS instead of LB.
VS_CODES = frozenset({"TEMP", "SBP", "DBP", "MAP", "HR", "SPO2", "RR", "O2_FLOW", "FIO2"})
EVENT_TERMS = {"CRS": "Cytokine release syndrome", "ICANS": "Immune effector cell-associated neurotoxicity syndrome"}
#: Canonical patient column -> SUPPDM QNAM (and label).
SUPP_QNAMS = {
    "disease": ("DISEASE", "Disease"),
    "lymphodepletion": ("LYMPHDEP", "Lymphodepletion regimen"),
    "dose": ("CARTDOSE", "CAR-T dose"),
    "dose_unit": ("CARTDOSU", "CAR-T dose unit"),
    "tumor_burden": ("TUMBURD", "Tumour burden"),
    "tumor_burden_unit": ("TUMBURDU", "Tumour burden unit"),
}
#: Observation item -> (domain, --TESTCD, --TEST).
OBSERVATION_TESTS = {
    "ICE_SCORE": ("QS", "ICE", "ICE score"),
    "CAPD_SCORE": ("QS", "CAPD", "CAPD score"),
    "O2_DEVICE": ("RE", "O2DEVICE", "Oxygen device"),
    "CONSCIOUSNESS": ("NV", "LOC", "Level of consciousness"),
    "SEIZURE": ("NV", "SEIZURE", "Seizure"),
    "MOTOR_WEAKNESS": ("NV", "MOTOR", "Motor weakness"),
    "CEREBRAL_EDEMA": ("NV", "CEREDEMA", "Cerebral edema"),
}


def _text(table: pa.Table, column: str) -> pd.Series:
    values = table.column(column).to_pylist() if column in table.column_names else [None] * table.num_rows
    return pd.Series([None if v is None or v == "" else str(v) for v in values], dtype=object)


def _numbers_or_text(series: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(numbers, text kept where a value is not a plain number): numeric SDTM variables and their --DOSTXT."""
    numbers = pd.to_numeric(series, errors="coerce")
    return numbers.astype(float), series.where(numbers.isna() & series.notna(), None)


def _domain(name: str, usubjid: pd.Series, columns: dict[str, Any]) -> pd.DataFrame:
    """A domain frame: STUDYID, DOMAIN, USUBJID, --SEQ per subject, then ``columns``."""
    usubjid = usubjid.reset_index(drop=True)
    frame = pd.DataFrame({"STUDYID": STUDY, "DOMAIN": name, "USUBJID": usubjid}, index=usubjid.index)
    frame[f"{name}SEQ"] = (frame.groupby("USUBJID", sort=False).cumcount() + 1).astype(float)
    for key, value in columns.items():
        frame[key] = value.reset_index(drop=True) if isinstance(value, pd.Series) else value
    return frame


def _products_csv() -> Path:
    """features/tables/products.csv, found without importing ``features`` (its import pulls in scikit-learn)."""
    spec = importlib.util.find_spec("features")
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / "tables" / "products.csv"


def _product_names() -> dict[str, str]:
    """Product code -> generic name (the first synonym in features/tables/products.csv)."""
    with _products_csv().open("r", encoding="utf-8") as handle:
        table = pd.read_csv(handle, dtype=str, keep_default_na=False, comment="#")
    return {row.product: row.synonyms.split("|")[0].capitalize() for row in table.itertuples(index=False)}


def _dm(patients: pa.Table, deaths: pd.DataFrame) -> pd.DataFrame:
    ids = _text(patients, "patient_id")
    arm = _text(patients, "product").map(lambda p: _product_names().get(p, p) if p else None)
    anchor = _text(patients, "anchor_time")
    age, _ = _numbers_or_text(_text(patients, "age"))
    death = ids.map(deaths.drop_duplicates("patient_id").set_index("patient_id")["time"]).astype(object)
    return _domain("DM", ids, {
        "SUBJID": ids, "SITEID": _text(patients, "site"), "AGE": age, "AGEU": "YEARS", "SEX": _text(patients, "sex"),
        "ARMCD": _text(patients, "product").str.upper().str.replace("-", "", regex=False).str[:8],
        "ARM": arm, "ACTARMCD": _text(patients, "product").str.upper().str.replace("-", "", regex=False).str[:8],
        "ACTARM": arm, "RFSTDTC": anchor, "RFXSTDTC": anchor,
        "DTHFL": death.map(lambda t: "Y" if t is not None and t == t else None), "DTHDTC": death.where(death.notna(), None),
    })


def _suppdm(patients: pa.Table) -> pd.DataFrame:
    ids = _text(patients, "patient_id")
    parts = []
    for column, (qnam, label) in SUPP_QNAMS.items():
        values = _text(patients, column)
        keep = values.notna()
        parts.append(pd.DataFrame({"USUBJID": ids[keep], "QNAM": qnam, "QLABEL": label, "QVAL": values[keep]}))
    rows = pd.concat(parts).sort_values("USUBJID", kind="stable").reset_index(drop=True)
    frame = pd.DataFrame({"STUDYID": STUDY, "RDOMAIN": "DM", "USUBJID": rows["USUBJID"], "IDVAR": "", "IDVARVAL": ""})
    return frame.assign(QNAM=rows["QNAM"], QLABEL=rows["QLABEL"], QVAL=rows["QVAL"], QORIG="CRF")


def _ex(patients: pa.Table) -> pd.DataFrame:
    dose, dose_text = _numbers_or_text(_text(patients, "dose"))
    product = _text(patients, "product").map(lambda p: _product_names().get(p, p) if p else None)
    return _domain("EX", _text(patients, "patient_id"), {
        "EXTRT": product, "EXDOSE": dose, "EXDOSTXT": dose_text, "EXDOSU": _text(patients, "dose_unit"),
        "EXSTDTC": _text(patients, "anchor_time"),
    })


def _test_codes(names: pd.Series) -> tuple[pd.Series, pd.Series, pd.Series]:
    """(registry code or None, --TESTCD, --LOINC) per analyte name as written, one lookup per distinct name."""
    registry = load_registry()
    analytes = registry.analytes
    lookup: dict[str, tuple[str | None, str, str | None]] = {}
    for name in names.dropna().unique():
        code = registry.synonyms.get(normalize_name(name))
        if code is None:
            lookup[name] = (None, re.sub(r"[^A-Z0-9]", "", str(name).upper())[:8] or "UNKNOWN", None)
            continue
        testcd = analytes.loc[code, "sdtm_lbtestcd"] or code
        loinc = analytes.loc[code, "loinc"].split("|")[0] or None
        lookup[name] = (code, testcd, loinc)
    found = names.map(lookup)
    parts = [found.map(lambda t, i=i: t[i] if isinstance(t, tuple) else None) for i in range(3)]
    return parts[0], parts[1], parts[2]


def _findings_domain(name: str, rows: pd.DataFrame, test: pd.Series, testcd: pd.Series,
                     loinc: pd.Series | None, unit: pd.Series | None) -> pd.DataFrame:
    p = name
    columns: dict[str, Any] = {f"{p}TESTCD": testcd, f"{p}TEST": test}
    if loinc is not None:
        columns[f"{p}LOINC"] = loinc
    columns[f"{p}ORRES"] = rows["value"]
    if unit is not None:
        columns[f"{p}ORRESU"] = unit
    columns[f"{p}DTC"] = rows["time"]
    return _domain(name, rows["patient_id"], columns)


def _measurement_domains(measurements: pa.Table) -> dict[str, pd.DataFrame]:
    rows = pd.DataFrame({c: _text(measurements, c) for c in ("patient_id", "time", "analyte", "value", "unit")})
    code, testcd, loinc = _test_codes(rows["analyte"])
    vital = code.isin(VS_CODES).to_numpy()
    out = {}
    for name, mask in (("LB", ~vital), ("VS", vital)):
        part = rows[mask].reset_index(drop=True)
        out[name] = _findings_domain(name, part, part["analyte"], testcd[mask].reset_index(drop=True),
                                     loinc[mask].reset_index(drop=True), part["unit"])
    return out


def _observation_domains(observations: pa.Table) -> dict[str, pd.DataFrame]:
    rows = pd.DataFrame({c: _text(observations, c) for c in ("patient_id", "time", "item", "value")})
    spec = rows["item"].map(OBSERVATION_TESTS)
    known = spec.notna()
    if not known.all():
        raise ValueError("observations: items without an SDTM test: " + ", ".join(sorted(set(rows["item"][~known]))))
    domain = spec.map(lambda s: s[0])
    out = {}
    for name in dict.fromkeys(s[0] for s in OBSERVATION_TESTS.values()):
        part = rows[(domain == name).to_numpy()].reset_index(drop=True)
        tests = part["item"].map(OBSERVATION_TESTS)
        out[name] = _findings_domain(name, part, tests.map(lambda s: s[2]), tests.map(lambda s: s[1]), None, None)
    return out


def _ae(events: pd.DataFrame) -> pd.DataFrame:
    rows = events[events["event"].isin(list(EVENT_TERMS))].reset_index(drop=True)
    term = rows["event"].map(EVENT_TERMS)
    fatal = rows["grade"].astype(str) == "5"
    return _domain("AE", rows["patient_id"], {
        "AETERM": term, "AEDECOD": term, "AETOXGR": rows["grade"].astype(str), "AESTDTC": rows["time"],
        "AEENDTC": rows["time"].where(fatal, None), "AEOUT": fatal.map({True: "FATAL", False: None}),
        "AESDTH": fatal.map({True: "Y", False: "N"}),
    })


def _ds(patients: pa.Table, deaths: pd.DataFrame) -> pd.DataFrame:
    ids, anchor = _text(patients, "patient_id"), _text(patients, "anchor_time")
    consent = pd.DataFrame({"patient_id": ids, "DSTERM": "INFORMED CONSENT OBTAINED",
                            "DSDECOD": "INFORMED CONSENT OBTAINED", "DSCAT": "PROTOCOL MILESTONE", "time": anchor})
    died = deaths.assign(DSTERM="DEATH", DSDECOD="DEATH", DSCAT="DISPOSITION EVENT")
    rows = pd.concat([consent, died], ignore_index=True).sort_values("patient_id", kind="stable")
    return _domain("DS", rows["patient_id"], {c: rows[c] for c in ("DSTERM", "DSDECOD", "DSCAT")}
                   | {"DSSTDTC": rows["time"]})


def _cm(treatments: pa.Table) -> pd.DataFrame:
    rows = pd.DataFrame({c: _text(treatments, c) for c in ("patient_id", "time", "drug", "dose", "unit", "end_time")})
    dose, dose_text = _numbers_or_text(rows["dose"])
    return _domain("CM", rows["patient_id"], {
        "CMTRT": rows["drug"], "CMDECOD": rows["drug"].str.upper(), "CMDOSE": dose, "CMDOSTXT": dose_text,
        "CMDOSU": rows["unit"], "CMSTDTC": rows["time"], "CMENDTC": rows["end_time"],
    })


def sdtm_domains(tables: dict[str, pa.Table]) -> dict[str, pd.DataFrame]:
    """The canonical cohort tables (``simulate_tables``' text) as SDTM domain frames."""
    events = pd.DataFrame({c: _text(tables["events"], c) for c in ("patient_id", "event", "grade", "time")})
    deaths = events.loc[events["event"] == "DEATH", ["patient_id", "time"]].reset_index(drop=True)
    domains = {
        "DM": _dm(tables["patients"], deaths), "SUPPDM": _suppdm(tables["patients"]), "EX": _ex(tables["patients"]),
        **_measurement_domains(tables["measurements"]), "AE": _ae(events), "DS": _ds(tables["patients"], deaths),
    }
    if "treatments" in tables:
        domains["CM"] = _cm(tables["treatments"])
    if "observations" in tables:
        domains.update(_observation_domains(tables["observations"]))
    return domains


def _write_xpt(frame: pd.DataFrame, path: Path, name: str) -> None:
    import pyreadstat  # compiled extension: only for transport files

    out = frame.copy()
    for column in out.columns:
        if not pd.api.types.is_numeric_dtype(out[column].dtype):
            out[column] = out[column].astype(object).where(out[column].notna(), "").astype(str)
    pyreadstat.write_xport(out, str(path), table_name=name, file_format_version=5)


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    table = pa.table({c: pa.array(frame[c].tolist(), pa.float64() if pd.api.types.is_numeric_dtype(frame[c].dtype)
                                  else pa.string(), from_pandas=True) for c in frame.columns})
    pcsv.write_csv(table, str(path))


def write_sdtm(tables: dict[str, pa.Table], out: str | Path, fmt: Literal["xpt", "csv"] = "xpt") -> list[Path]:
    """Write the cohort's SDTM domains into the existing folder ``out`` (``<domain>.xpt`` or ``.csv``)."""
    out = Path(out)
    written = []
    for name, frame in sdtm_domains(tables).items():
        path = out / f"{name.lower()}.{fmt}"
        _write_xpt(frame, path, name) if fmt == "xpt" else _write_csv(frame, path)
        written.append(path)
    return written
