"""Write a cohort's canonical tables (what ``crs simulate`` writes) as an OMOP CDM v5.4 subset.

Tables: ``person``, ``measurement``, ``observation``, ``drug_exposure``, ``condition_occurrence``,
``death`` and a minimal ``concept`` (only the concepts used), with the CDM v5.4 column names, in DuckDB
(a file path or ``duckdb:///`` URL) or any SQLAlchemy URL (PostgreSQL). Reading it back with
:func:`pipeline.adapters.omop.read_omop` (``patient_id="person_source_value"``) and ingesting gives the
accepted tables of the canonical path. How each table is written (the read side's conventions):

* ``person``: ``person_id`` 1..n in row order, ``person_source_value`` = patient_id, sex -> gender concept
  8507 / 8532, birth on 1 January of (anchor year - age), so the age at the anchor is the given age.
* the anchor: a ``drug_exposure`` at ``anchor_time`` of the product's concept (``omop_products.csv``);
  ``lymphodepletion_start`` -> a fludarabine ``drug_exposure``; ``follow_up_end`` -> an
  ``observation_period`` from 30 days before the anchor to that date (a date: its time of day is lost).
* other patient covariates (site, disease, ...): ``observation`` rows at the anchor whose
  ``observation_source_value`` is the covariate name (``omop_observations.csv`` lists them), numbers in
  ``value_as_number``, words in ``value_as_string``.
* ``measurements``: the analyte's LOINC concept (first LOINC code of ``analytes.csv``), or a local concept
  (vocabulary ``CRS_PIPELINE``, code = analyte code) for analytes without one; ``<x`` / ``>x`` values as
  ``operator_concept_id`` + ``value_as_number``; words (``hemolyzed``) in ``value_source_value``; the unit
  in ``unit_source_value`` (and a UCUM concept where the registry reads the UCUM code).
* ``treatments``: ``drug_exposure`` with an ingredient concept named by the generic name, ``quantity`` =
  dose, ``dose_unit_source_value`` = unit, ``drug_exposure_end_datetime`` = end_time.
* ``observations``: ``observation`` rows, ``observation_source_value`` = item, value as above.
* ``events``: CRS / ICANS -> ``condition_occurrence`` (concept named after the MedDRA term, source value
  ``"CRS grade 3"``); DEATH -> ``death`` (the first per person).

Concept ids are local (>= 2,000,000,000, as OMOP reserves for site concepts); codes are real LOINC / UCUM
codes. What cannot be stored is left out (the canonical path quarantines all of it): rows whose time is not
an ISO 8601 timestamp (a CDM date column holds no free text), patients without an anchor time, rows of
events other than CRS / ICANS / DEATH.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import sqlalchemy as sa

from pipeline.adapters.omop import LOCAL_VOCABULARY, OPERATORS, UCUM_TEXT, registry_table
from pipeline.errors import UserError
from pipeline.registry import event_synonyms, load_registry, normalize_name

LOCAL_CONCEPT_BASE = 2_000_000_000
_NUM = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_VALUE = re.compile(rf"^\s*(<=|>=|<|>)?\s*({_NUM})\s*$")
_PATIENT_FIELDS = ("patient_id", "anchor_time", "age", "sex", "product", "lymphodepletion_start", "follow_up_end")
#: Units the exporter writes as UCUM concepts (the registry reads these codes, some through UCUM_TEXT).
_UCUM = {"mg/L", "U/L", "mg/dL", "g/dL", "ng/mL", "g/L", "pg/mL", "%", "L/min", "ug/L", "umol/L", "mmHg", "C",
         "10^9/L", "ug/mL FEU", "U/mL"}
_EVENT_CONCEPTS = {"CRS": "Cytokine release syndrome", "ICANS": "Immune effector cell-associated neurotoxicity syndrome"}

DDL = {
    "concept": "concept_id INTEGER NOT NULL, concept_name VARCHAR(255) NOT NULL, domain_id VARCHAR(20) NOT NULL, "
               "vocabulary_id VARCHAR(20) NOT NULL, concept_class_id VARCHAR(20) NOT NULL, standard_concept VARCHAR(1), "
               "concept_code VARCHAR(50) NOT NULL, valid_start_date DATE NOT NULL, valid_end_date DATE NOT NULL, "
               "invalid_reason VARCHAR(1)",
    "person": "person_id INTEGER NOT NULL, gender_concept_id INTEGER NOT NULL, year_of_birth INTEGER NOT NULL, "
              "month_of_birth INTEGER, day_of_birth INTEGER, birth_datetime TIMESTAMP, race_concept_id INTEGER NOT NULL, "
              "ethnicity_concept_id INTEGER NOT NULL, location_id INTEGER, provider_id INTEGER, care_site_id INTEGER, "
              "person_source_value VARCHAR(50), gender_source_value VARCHAR(50), gender_source_concept_id INTEGER, "
              "race_source_value VARCHAR(50), race_source_concept_id INTEGER, ethnicity_source_value VARCHAR(50), "
              "ethnicity_source_concept_id INTEGER",
    "measurement": "measurement_id BIGINT NOT NULL, person_id INTEGER NOT NULL, measurement_concept_id INTEGER NOT NULL, "
                   "measurement_date DATE NOT NULL, measurement_datetime TIMESTAMP, measurement_time VARCHAR(10), "
                   "measurement_type_concept_id INTEGER NOT NULL, operator_concept_id INTEGER, "
                   "value_as_number DOUBLE PRECISION, value_as_concept_id INTEGER, unit_concept_id INTEGER, "
                   "range_low DOUBLE PRECISION, range_high DOUBLE PRECISION, provider_id INTEGER, "
                   "visit_occurrence_id INTEGER, visit_detail_id INTEGER, measurement_source_value VARCHAR(50), "
                   "measurement_source_concept_id INTEGER, unit_source_value VARCHAR(50), "
                   "unit_source_concept_id INTEGER, value_source_value VARCHAR(50), measurement_event_id BIGINT, "
                   "meas_event_field_concept_id INTEGER",
    "observation": "observation_id BIGINT NOT NULL, person_id INTEGER NOT NULL, observation_concept_id INTEGER NOT NULL, "
                   "observation_date DATE NOT NULL, observation_datetime TIMESTAMP, "
                   "observation_type_concept_id INTEGER NOT NULL, value_as_number DOUBLE PRECISION, "
                   "value_as_string VARCHAR(60), value_as_concept_id INTEGER, qualifier_concept_id INTEGER, "
                   "unit_concept_id INTEGER, provider_id INTEGER, visit_occurrence_id INTEGER, visit_detail_id INTEGER, "
                   "observation_source_value VARCHAR(50), observation_source_concept_id INTEGER, "
                   "unit_source_value VARCHAR(50), qualifier_source_value VARCHAR(50), value_source_value VARCHAR(50), "
                   "observation_event_id BIGINT, obs_event_field_concept_id INTEGER",
    "drug_exposure": "drug_exposure_id BIGINT NOT NULL, person_id INTEGER NOT NULL, drug_concept_id INTEGER NOT NULL, "
                     "drug_exposure_start_date DATE NOT NULL, drug_exposure_start_datetime TIMESTAMP, "
                     "drug_exposure_end_date DATE NOT NULL, drug_exposure_end_datetime TIMESTAMP, "
                     "verbatim_end_date DATE, drug_type_concept_id INTEGER NOT NULL, stop_reason VARCHAR(20), "
                     "refills INTEGER, quantity DOUBLE PRECISION, days_supply INTEGER, sig TEXT, "
                     "route_concept_id INTEGER, lot_number VARCHAR(50), provider_id INTEGER, "
                     "visit_occurrence_id INTEGER, visit_detail_id INTEGER, drug_source_value VARCHAR(50), "
                     "drug_source_concept_id INTEGER, route_source_value VARCHAR(50), "
                     "dose_unit_source_value VARCHAR(50)",
    "condition_occurrence": "condition_occurrence_id BIGINT NOT NULL, person_id INTEGER NOT NULL, "
                            "condition_concept_id INTEGER NOT NULL, condition_start_date DATE NOT NULL, "
                            "condition_start_datetime TIMESTAMP, condition_end_date DATE, condition_end_datetime TIMESTAMP, "
                            "condition_type_concept_id INTEGER NOT NULL, condition_status_concept_id INTEGER, "
                            "stop_reason VARCHAR(20), provider_id INTEGER, visit_occurrence_id INTEGER, "
                            "visit_detail_id INTEGER, condition_source_value VARCHAR(50), "
                            "condition_source_concept_id INTEGER, condition_status_source_value VARCHAR(50)",
    "observation_period": "observation_period_id INTEGER NOT NULL, person_id INTEGER NOT NULL, "
                          "observation_period_start_date DATE NOT NULL, observation_period_end_date DATE NOT NULL, "
                          "period_type_concept_id INTEGER NOT NULL",
    "death": "person_id INTEGER NOT NULL, death_date DATE NOT NULL, death_datetime TIMESTAMP, "
             "death_type_concept_id INTEGER, cause_concept_id INTEGER, cause_source_value VARCHAR(50), "
             "cause_source_concept_id INTEGER",
}
#: type_concept_id written for every row: 32817 "EHR" (OMOP Type Concept).
EHR_TYPE = 32817


class _Concepts:
    """The minimal ``concept`` table: one local id per (vocabulary, code)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], dict] = {}

    def id(self, vocabulary: str, code: str, name: str, domain: str, klass: str) -> int:
        key = (vocabulary, code)
        if key not in self.rows:
            self.rows[key] = {"concept_id": LOCAL_CONCEPT_BASE + len(self.rows) + 1, "concept_name": name[:255],
                              "domain_id": domain, "vocabulary_id": vocabulary, "concept_class_id": klass,
                              "standard_concept": "S", "concept_code": code,
                              "valid_start_date": pd.Timestamp("1970-01-01"),
                              "valid_end_date": pd.Timestamp("2099-12-31"), "invalid_reason": None}
        return self.rows[key]["concept_id"]

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(list(self.rows.values()), columns=list(_columns("concept")))


def _columns(table: str) -> list[str]:
    return [part.strip().split(" ")[0] for part in DDL[table].split(",")]


def _text(frame: pd.DataFrame, column: str) -> pd.Series:
    """A canonical column as stripped text, None for empty cells."""
    if column not in frame.columns:
        return pd.Series([None] * len(frame), index=frame.index, dtype=object)
    text = frame[column].astype(object).where(frame[column].notna(), None)
    text = text.map(lambda v: None if v is None or str(v).strip() == "" else str(v).strip())
    return text


def _times(text: pd.Series) -> pd.Series:
    """ISO 8601 timestamps (NaT for anything else: bad texts, hours since anchor)."""
    iso = text.where(text.fillna("").str.match(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?$"), None)
    return pd.to_datetime(iso, format="ISO8601", errors="coerce")


def _split_values(text: pd.Series) -> tuple[pd.Series, pd.Series, pd.Series]:
    """(value_as_number, operator_concept_id, value_source_value) of value texts."""
    parts = text.fillna("").str.extract(_VALUE)
    number = pd.to_numeric(parts[1], errors="coerce")
    by_prefix = {prefix: concept for concept, prefix in OPERATORS.items() if prefix}
    operator = parts[0].map(by_prefix)
    words = text.where(number.isna(), None)
    return number, operator, words


def _frames(tables: dict[str, pa.Table | pd.DataFrame]) -> dict[str, pd.DataFrame]:
    return {name: (t.to_pandas() if isinstance(t, pa.Table) else t).reset_index(drop=True)
            for name, t in tables.items() if t is not None}


def _person_ids(patients: pd.DataFrame, others: Iterable[pd.DataFrame]) -> dict[str, int]:
    """patient_id -> person_id: 1..n for the patients, then further ids for unknown ids in other tables."""
    ids = {pid: i + 1 for i, pid in enumerate(_text(patients, "patient_id").dropna().drop_duplicates())}
    for frame in others:
        for pid in _text(frame, "patient_id").dropna().unique():
            ids.setdefault(pid, len(ids) + 1)
    return ids


def _day(times: pd.Series) -> pd.Series:
    return times.dt.normalize()


def _product_concept(product: str | None, concepts: _Concepts) -> int:
    """The CAR-T product's concept (named by its generic name in omop_products.csv, else as written)."""
    table = registry_table("omop_products.csv")
    names = {row.product.lower(): row.names.split("|")[0] for row in table.itertuples(index=False)}
    name = names.get(str(product).lower(), str(product or "unknown CAR-T product"))
    return concepts.id(LOCAL_VOCABULARY, f"product:{name}", name, "Drug", "Ingredient")


def person_rows(patients: pd.DataFrame, ids: dict[str, int], concepts: _Concepts) -> dict[str, pd.DataFrame]:
    """person, the anchor drug_exposure and the covariate observation rows of patients with an anchor."""
    pid, anchor = _text(patients, "patient_id"), _times(_text(patients, "anchor_time"))
    age = pd.to_numeric(_text(patients, "age"), errors="coerce")
    keep = (pid.notna() & anchor.notna() & age.notna() & ~pid.duplicated()).to_numpy()
    p, anchor, age, pid = patients[keep], anchor[keep], age[keep].astype(int), pid[keep]
    person_id = pid.map(ids).astype("int64")
    sex = _text(p, "sex").fillna("").str.upper()
    person = pd.DataFrame({
        "person_id": person_id, "gender_concept_id": sex.map({"M": 8507, "F": 8532}).fillna(0).astype(int),
        "year_of_birth": anchor.dt.year - age, "month_of_birth": 1, "day_of_birth": 1,
        "race_concept_id": 0, "ethnicity_concept_id": 0, "person_source_value": pid,
        "gender_source_value": _text(p, "sex")})
    anchor_drug = pd.DataFrame({
        "drug_exposure_id": np.arange(1, len(p) + 1), "person_id": person_id,
        "drug_concept_id": [_product_concept(v, concepts) for v in _text(p, "product")],
        "drug_exposure_start_date": _day(anchor), "drug_exposure_start_datetime": anchor,
        "drug_exposure_end_date": _day(anchor), "drug_type_concept_id": EHR_TYPE,
        "drug_source_value": _text(p, "product")})
    lympho = _times(_text(p, "lymphodepletion_start"))
    lympho_drug = pd.DataFrame({
        "person_id": person_id[lympho.notna()], "drug_concept_id": concepts.id(
            LOCAL_VOCABULARY, "drug:fludarabine", "fludarabine", "Drug", "Ingredient"),
        "drug_exposure_start_date": _day(lympho[lympho.notna()]), "drug_exposure_start_datetime": lympho[lympho.notna()],
        "drug_exposure_end_date": _day(lympho[lympho.notna()]), "drug_type_concept_id": EHR_TYPE,
        "drug_source_value": "fludarabine"})
    anchor_drug = pd.concat([anchor_drug, lympho_drug.assign(
        drug_exposure_id=np.arange(len(p) + 1, len(p) + 1 + len(lympho_drug)))], ignore_index=True)
    end = _times(_text(p, "follow_up_end"))
    has_end = (end.notna() & (end >= anchor)).to_numpy()
    period = pd.DataFrame({
        "observation_period_id": np.arange(1, int(has_end.sum()) + 1), "person_id": person_id[has_end],
        "observation_period_start_date": _day(anchor[has_end] - pd.Timedelta(days=30)),
        "observation_period_end_date": _day(end[has_end]), "period_type_concept_id": EHR_TYPE})
    covariates = [c for c in p.columns if c not in _PATIENT_FIELDS]
    long = pd.concat([pd.DataFrame({"person_id": person_id, "observation_source_value": c, "text": _text(p, c),
                                    "t": anchor}) for c in covariates], ignore_index=True) if covariates else None
    return {"person": person, "drug_exposure": anchor_drug, "covariates": long, "observation_period": period}


def _value_columns(text: pd.Series) -> dict[str, pd.Series]:
    """Observation values: numbers (no operator) in value_as_number, anything else in value_as_string."""
    number, operator, _ = _split_values(text)
    plain = number.notna() & operator.isna()
    return {"value_as_number": number.where(plain), "value_as_string": text.where(~plain, None)}


def observation_rows(items: pd.DataFrame | None, covariates: pd.DataFrame | None, ids: dict[str, int]) -> pd.DataFrame:
    """Bedside observations (source value = item) and covariates (source value = covariate name)."""
    parts = []
    if items is not None and len(items):
        t = _times(_text(items, "time"))
        parts.append(pd.DataFrame({"person_id": _text(items, "patient_id").map(ids), "t": t,
                                   "observation_source_value": _text(items, "item"),
                                   **_value_columns(_text(items, "value"))}))
    if covariates is not None and len(covariates):
        parts.append(pd.DataFrame({"person_id": covariates["person_id"], "t": covariates["t"],
                                   "observation_source_value": covariates["observation_source_value"],
                                   **_value_columns(covariates["text"])}))
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        {"person_id": [], "t": pd.Series([], dtype="datetime64[ns]"), "observation_source_value": [],
         "value_as_number": [], "value_as_string": []})
    frame = frame[frame["t"].notna() & frame["person_id"].notna()]
    return pd.DataFrame({
        "observation_id": np.arange(1, len(frame) + 1), "person_id": frame["person_id"].astype("int64"),
        "observation_concept_id": 0, "observation_date": _day(frame["t"]), "observation_datetime": frame["t"],
        "observation_type_concept_id": EHR_TYPE, "value_as_number": frame["value_as_number"],
        "value_as_string": frame["value_as_string"],
        "observation_source_value": frame["observation_source_value"]})


def _analyte_concepts(analytes: pd.Series, concepts: _Concepts) -> pd.Series:
    """Analyte text -> concept id (its first LOINC code, else a local concept coded by the analyte code)."""
    registry = load_registry()
    out = {}
    for name in analytes.dropna().unique():
        code = registry.synonyms.get(normalize_name(name))
        if code is None:
            out[name] = concepts.id(LOCAL_VOCABULARY, f"unmapped:{name}", name, "Measurement", "Lab Test")
            continue
        loinc = [c for c in registry.analytes.loc[code, "loinc"].split("|") if c]
        label = registry.analytes.loc[code, "name"]
        out[name] = (concepts.id("LOINC", loinc[0], label, "Measurement", "Lab Test") if loinc
                     else concepts.id(LOCAL_VOCABULARY, code, label, "Measurement", "Lab Test"))
    return analytes.map(out)


def _unit_concepts(units: pd.Series, concepts: _Concepts) -> pd.Series:
    to_ucum = {text: code for code, text in UCUM_TEXT.items() if code not in ("[IU]/L", "{breaths}/min")}
    out = {u: concepts.id("UCUM", to_ucum.get(u, u), to_ucum.get(u, u), "Unit", "Unit")
           for u in units.dropna().unique() if u in _UCUM}
    return units.map(out).fillna(0).astype("int64")


def measurement_rows(measurements: pd.DataFrame, ids: dict[str, int], concepts: _Concepts) -> pd.DataFrame:
    t = _times(_text(measurements, "time"))
    frame = measurements[t.notna().to_numpy()]
    t = t[t.notna()]
    number, operator, words = _split_values(_text(frame, "value"))
    units = _text(frame, "unit")
    return pd.DataFrame({
        "measurement_id": np.arange(1, len(frame) + 1), "person_id": _text(frame, "patient_id").map(ids),
        "measurement_concept_id": _analyte_concepts(_text(frame, "analyte"), concepts),
        "measurement_date": _day(t), "measurement_datetime": t, "measurement_type_concept_id": EHR_TYPE,
        "operator_concept_id": operator, "value_as_number": number,
        "unit_concept_id": _unit_concepts(units, concepts),
        "measurement_source_value": _text(frame, "analyte"), "unit_source_value": units,
        "value_source_value": words})


def treatment_rows(treatments: pd.DataFrame | None, ids: dict[str, int], concepts: _Concepts,
                   first_id: int) -> pd.DataFrame:
    if treatments is None or not len(treatments):
        return pd.DataFrame(columns=_columns("drug_exposure"))
    t = _times(_text(treatments, "time"))
    frame, t = treatments[t.notna().to_numpy()], t[t.notna()]
    end = _times(_text(frame, "end_time"))
    drug = _text(frame, "drug")
    return pd.DataFrame({
        "drug_exposure_id": np.arange(first_id, first_id + len(frame)), "person_id": _text(frame, "patient_id").map(ids),
        "drug_concept_id": drug.map({d: concepts.id(LOCAL_VOCABULARY, f"drug:{d}", d, "Drug", "Ingredient")
                                     for d in drug.dropna().unique()}).fillna(0).astype("int64"),
        "drug_exposure_start_date": _day(t), "drug_exposure_start_datetime": t,
        "drug_exposure_end_date": _day(end.fillna(t)), "drug_exposure_end_datetime": end,
        "drug_type_concept_id": EHR_TYPE, "quantity": pd.to_numeric(_text(frame, "dose"), errors="coerce"),
        "drug_source_value": drug, "dose_unit_source_value": _text(frame, "unit")})


def event_rows(events: pd.DataFrame | None, ids: dict[str, int], concepts: _Concepts) -> dict[str, pd.DataFrame]:
    """CRS / ICANS -> condition_occurrence ("CRS grade 3"); DEATH -> death (first per person)."""
    if events is None or not len(events):
        return {"condition_occurrence": pd.DataFrame(columns=_columns("condition_occurrence")),
                "death": pd.DataFrame(columns=_columns("death"))}
    t = _times(_text(events, "time"))
    name = _text(events, "event").map(lambda v: event_synonyms().get(normalize_name(v)) if v else None)
    frame = events.assign(_t=t, _event=name)[t.notna().to_numpy()]
    graded = frame[frame["_event"].isin(list(_EVENT_CONCEPTS))]
    source = graded["_event"] + " grade " + _text(graded, "grade").fillna("")
    conditions = pd.DataFrame({
        "condition_occurrence_id": np.arange(1, len(graded) + 1), "person_id": _text(graded, "patient_id").map(ids),
        "condition_concept_id": graded["_event"].map({e: concepts.id(LOCAL_VOCABULARY, f"event:{e}", label, "Condition",
                                                                     "Clinical Finding")
                                                      for e, label in _EVENT_CONCEPTS.items()}),
        "condition_start_date": _day(graded["_t"]), "condition_start_datetime": graded["_t"],
        "condition_type_concept_id": EHR_TYPE, "condition_source_value": source.str.strip()})
    dead = frame[frame["_event"] == "DEATH"].sort_values("_t", kind="stable")
    dead = dead.assign(_pid=_text(dead, "patient_id")).drop_duplicates("_pid")
    death = pd.DataFrame({"person_id": dead["_pid"].map(ids), "death_date": _day(dead["_t"]),
                          "death_datetime": dead["_t"], "death_type_concept_id": EHR_TYPE})
    return {"condition_occurrence": conditions, "death": death}


def omop_frames(tables: dict[str, pa.Table | pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The OMOP tables (CDM column names, missing columns added as nulls) for canonical cohort tables."""
    frames = _frames(tables)
    if "patients" not in frames:
        raise UserError("export_omop: table 'patients' is required")
    for name in ("measurements", "treatments", "observations", "events"):
        if name in frames and len(frames[name]):
            frames[name] = frames[name][_text(frames[name], "patient_id").notna().to_numpy()]
    concepts = _Concepts()
    ids = _person_ids(frames["patients"], [f for n, f in frames.items() if n != "patients"])
    people = person_rows(frames["patients"], ids, concepts)
    out = {
        "person": people["person"],
        "measurement": measurement_rows(frames.get("measurements", pd.DataFrame()), ids, concepts),
        "observation": observation_rows(frames.get("observations"), people["covariates"], ids),
        "drug_exposure": pd.concat([people["drug_exposure"],
                                    treatment_rows(frames.get("treatments"), ids, concepts,
                                                   len(people["drug_exposure"]) + 1)], ignore_index=True),
        **event_rows(frames.get("events"), ids, concepts),
        "observation_period": people["observation_period"],
    }
    out["concept"] = concepts.frame()
    return {name: _typed(name, frame.reindex(columns=_columns(name))) for name, frame in out.items()}


def _typed(table: str, frame: pd.DataFrame) -> pd.DataFrame:
    """Columns in their DDL types: nullable integers, dates as dates, timestamps, floats, text."""
    types = {part.strip().split(" ")[0]: part.strip().split(" ")[1] for part in DDL[table].split(",")}
    out = {}
    for column, kind in types.items():
        values = frame[column]
        if kind in ("INTEGER", "BIGINT"):
            out[column] = pd.to_numeric(values, errors="coerce").astype("Int64")
        elif kind == "DATE":
            out[column] = pd.to_datetime(values).dt.date.astype(object).where(values.notna(), None)
        elif kind == "TIMESTAMP":
            out[column] = pd.to_datetime(values)
        elif kind == "DOUBLE":
            out[column] = pd.to_numeric(values, errors="coerce").astype("float64")
        else:
            out[column] = values.astype(object).where(values.notna(), None)
    return pd.DataFrame(out, index=frame.index)


def _url(target: str | Path) -> str:
    text = str(target)
    return text if "://" in text else f"duckdb:///{Path(text).resolve()}"


def _create(conn: sa.Connection, schema: str | None) -> None:
    if schema:
        conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    for name, columns in DDL.items():
        table = f'"{schema}".{name}' if schema else name
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
        conn.execute(sa.text(f"CREATE TABLE {table} ({columns})"))


def _insert(conn: sa.Connection, schema: str | None, name: str, frame: pd.DataFrame) -> None:
    """Bulk insert: DuckDB from Arrow, PostgreSQL (psycopg) by COPY, other databases by executemany."""
    table = f'"{schema}".{name}' if schema else name
    if not len(frame):
        return
    if conn.dialect.name == "duckdb":
        raw = conn.connection.driver_connection
        raw.register("_export_frame", frame)
        raw.execute(f"INSERT INTO {table} SELECT * FROM _export_frame")
        raw.unregister("_export_frame")
        return
    rows = frame.astype(object).where(frame.notna(), None)
    if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg":
        with conn.connection.driver_connection.cursor() as cursor:
            with cursor.copy(f"COPY {table} ({', '.join(frame.columns)}) FROM STDIN") as copy:
                for row in rows.itertuples(index=False, name=None):
                    copy.write_row(row)
        return
    marks = ", ".join(f":{c}" for c in frame.columns)
    conn.execute(sa.text(f"INSERT INTO {table} VALUES ({marks})"), rows.to_dict("records"))


def export_omop(tables: dict[str, pa.Table | pd.DataFrame], url: str | Path, schema: str | None = None) -> None:
    """Write canonical cohort tables (``simulate_tables``' output) as an OMOP CDM v5.4 subset.

    ``url``: a DuckDB file path or any SQLAlchemy URL (``postgresql+psycopg://...``); ``schema`` is created
    if needed. Existing tables of the subset are replaced.
    """
    if schema is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", schema):
        raise UserError("export_omop: schema must be a plain SQL identifier")
    frames = omop_frames(tables)
    engine = sa.create_engine(_url(url))
    try:
        with engine.begin() as conn:
            _create(conn, schema)
            for name, frame in frames.items():
                _insert(conn, schema, name, frame)
    finally:
        engine.dispose()


__all__ = ["DDL", "export_omop", "omop_frames"]
