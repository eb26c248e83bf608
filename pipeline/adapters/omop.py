"""OMOP CDM v5.4 databases (``cohort.format: omop``): a SQLAlchemy URL in, the canonical raw tables out.

The same SQL text runs on DuckDB (``duckdb:///path/cdm.duckdb``, the embedded default; opened read-only)
and PostgreSQL (``postgresql+psycopg://user@host/db``); ``schema`` names the CDM schema. Every filter is
pushed into SQL, so a site database is never loaded whole:

* **patient set**: persons with a CAR-T anchor, the first ``drug_exposure`` whose drug concept's name (or
  RxNorm code) is a product of ``pipeline/registry/omop_products.csv``;
* **concept set**: measurements whose concept is a LOINC code of ``analytes.csv`` (or a code of the local
  vocabulary :data:`LOCAL_VOCABULARY` that is an analyte code, for analytes without a LOINC code); drugs
  whose concept name is a treatment of ``drugs.csv`` / ``drug_classes.csv``; observations and conditions
  by name (``omop_observations.csv``, ``observation_items.csv``, ``events.csv``);
* **time window**: rows from ``window_days[0]`` to ``window_days[1]`` days around the anchor.

Source rows the filters leave out are counted with ``COUNT`` queries into ``RawTable.out_of_scope`` per
source table; every emitted row carries ``source_table``. Each source row is emitted once, counted out of
scope once, or *folded* into a patient row (the anchor ``drug_exposure`` -> ``anchor_time`` and
``product``; covariate ``observation`` rows -> patient covariates): :func:`read_omop_counted` returns
those counts too, so ``rows in the table == emitted + folded + out_of_scope`` per source table.

Row-level rules (units, synonyms, ranges, date-only times, grades) stay in ingest: values are passed as
the text a canonical file would hold (``<1.5`` for a censored result, ``2022-03-01`` for a date-only
measurement).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from pipeline.adapters.canonical import DEFAULT_LIMITS, RawTable
from pipeline.adapters.dialect import ReadLimits
from pipeline.cohort import EVENTS, MEASUREMENTS, OBSERVATIONS, PATIENTS, TREATMENTS
from pipeline.errors import UserError
from pipeline.registry import (
    drug_classes,
    drug_synonyms,
    event_synonyms,
    load_registry,
    normalize_name,
    observation_item_synonyms,
)

#: Vocabulary of local concepts (concept_id >= 2,000,000,000) whose concept_code is an analyte code of
#: analytes.csv: how analytes without a LOINC code (sgp130, MIP-1a, ...) are stored.
LOCAL_VOCABULARY = "CRS_PIPELINE"
#: operator_concept_id -> prefix of the value text (OMOP "Meas Value Operator" concepts, Athena).
OPERATORS = {4171756: "<", 4171754: "<=", 4172704: ">", 4171755: ">=", 4172703: ""}
#: gender_concept_id -> patients.sex
GENDERS = {8507: "M", 8532: "F"}
#: UCUM codes whose spelling the unit registry does not read -> the registry's spelling.
UCUM_TEXT = {"Cel": "C", "[degF]": "F", "mm[Hg]": "mmHg", "ug/mL{FEU}": "ug/mL FEU", "{beats}/min": "/min",
             "{breaths}/min": "/min", "[iU]/L": "IU/L", "[IU]/L": "IU/L", "10*3/uL": "10^3/uL", "10*9/L": "10^9/L"}
REQUIRED_TABLES = ("person", "drug_exposure", "measurement", "concept")
OPTIONAL_TABLES = ("observation", "condition_occurrence", "death", "observation_period")
#: Lymphodepleting chemotherapy (drug concept names): the first start on or before the anchor (inside the
#: window) is the patient's ``lymphodepletion_start``, as in the SDTM adapter.
LYMPHODEPLETION_DRUGS = ("fludarabine", "cyclophosphamide", "bendamustine")
DEFAULT_WINDOW_DAYS = (-90.0, 365.0)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class OmopQuery:
    """What to read: the CDM schema (``None``: the default), the time window around the anchor (days) and
    which person column becomes ``patient_id``."""

    schema: str | None = None
    window_days: tuple[float, float] = DEFAULT_WINDOW_DAYS
    patient_id: str = "person_id"

    def table(self, name: str) -> str:
        return f'"{self.schema}".{name}' if self.schema else name

    def window(self, column: str) -> str:
        low, high = self.window_days
        return (f"{column} >= a.anchor_time - INTERVAL '{-low:g} days' "
                f"AND {column} < a.anchor_time + INTERVAL '{high:g} days'")


def registry_table(name: str) -> pd.DataFrame:
    with resources.files("pipeline.registry").joinpath(name).open("r", encoding="utf-8") as handle:
        return pd.read_csv(handle, dtype=str, keep_default_na=False, comment="#")


def _sql_list(values: Sequence[str]) -> str:
    """A literal SQL list of registry texts (quotes doubled); never user input."""
    return "(" + ", ".join("'" + str(v).replace("'", "''") + "'" for v in sorted(set(values))) + ")"


def _names(text: str) -> list[str]:
    return [normalize_name(t) for t in text.split("|") if t.strip()]


@functools.cache
def product_names() -> dict[str, str]:
    """omop_products.csv: normalised concept name (generic or brand) or RxNorm code -> product."""
    out: dict[str, str] = {}
    for row in registry_table("omop_products.csv").itertuples(index=False):
        for key in [*_names(row.names), *(f"rxnorm:{c.strip()}" for c in row.rxnorm.split("|") if c.strip())]:
            out[key] = row.product
    return out


@functools.cache
def observation_targets() -> dict[str, str]:
    """Normalised observation name -> item (``O2_DEVICE``) or ``patients.<covariate>``; events excluded."""
    out = dict(observation_item_synonyms())
    for row in registry_table("omop_observations.csv").itertuples(index=False):
        out.update({name: row.target for name in _names(row.match)})
    return out


@functools.cache
def grade_patterns() -> dict[str, re.Pattern[str]]:
    """omop_events.csv: source table -> the pattern whose group ``grade`` is the grade in a source value."""
    table = registry_table("omop_events.csv")
    return {row.source_table: re.compile(row.grade_pattern, re.IGNORECASE) for row in table.itertuples(index=False)}


@functools.cache
def treatment_names() -> dict[str, str]:
    """Normalised drug name or synonym -> canonical generic, for the drugs of drug_classes.csv."""
    wanted = set(drug_classes())
    return {name: drug for name, drug in drug_synonyms().items() if drug in wanted}


def outcome_names() -> dict[str, str]:
    """events.csv names of the graded outcomes (CRS, ICANS)."""
    return {name: event for name, event in event_synonyms().items() if event in ("CRS", "ICANS")}


def _name_match(column: str, names: Sequence[str]) -> str:
    """SQL: ``column`` (lower case) is one of ``names`` or starts with one followed by a space."""
    likes = " OR ".join(f"LOWER({column}) LIKE '{n.replace(chr(39), chr(39) * 2)} %'" for n in sorted(set(names)))
    return f"(LOWER({column}) IN {_sql_list(names)} OR {likes})"


def _anchors_cte(q: OmopQuery) -> str:
    """``anchors``: per person (of ``person``), the first exposure to a listed CAR-T product."""
    names = [k for k in product_names() if not k.startswith("rxnorm:")]
    codes = [k.split(":", 1)[1] for k in product_names() if k.startswith("rxnorm:")] or ["-"]
    start = "COALESCE(de.drug_exposure_start_datetime, CAST(de.drug_exposure_start_date AS TIMESTAMP))"
    return f"""anchors AS (
  SELECT person_id, anchor_time, anchor_date_only, product_name, product_code, drug_exposure_id FROM (
    SELECT de.person_id, {start} AS anchor_time, LOWER(c.concept_name) AS product_name,
           CASE WHEN de.drug_exposure_start_datetime IS NULL THEN 1 ELSE 0 END AS anchor_date_only,
           CASE WHEN c.vocabulary_id = 'RxNorm' THEN c.concept_code END AS product_code, de.drug_exposure_id,
           ROW_NUMBER() OVER (PARTITION BY de.person_id ORDER BY {start}, de.drug_exposure_id) AS rn
    FROM {q.table('drug_exposure')} de JOIN {q.table('concept')} c ON c.concept_id = de.drug_concept_id
    WHERE ({_name_match('c.concept_name', names)}
           OR (c.vocabulary_id = 'RxNorm' AND c.concept_code IN {_sql_list(codes)}))
      AND de.person_id IN (SELECT person_id FROM {q.table('person')})
  ) ranked WHERE rn = 1)"""


def measurement_sql(q: OmopQuery) -> str:
    """Measurements of anchored persons, registry concepts only, inside the window."""
    registry = load_registry().analytes
    loinc = [c for codes in registry["loinc"] for c in codes.split("|") if c]
    local = list(registry["code"])
    when = "COALESCE(m.measurement_datetime, CAST(m.measurement_date AS TIMESTAMP))"
    ucum = " ".join(f"WHEN '{code}' THEN '{text}'" for code, text in UCUM_TEXT.items())
    return f"""WITH {_anchors_cte(q)}
SELECT CAST(p.{q.patient_id} AS VARCHAR) AS patient_id, CASE WHEN m.measurement_datetime IS NULL THEN CAST(m.measurement_date AS VARCHAR)
                         ELSE REPLACE(CAST(m.measurement_datetime AS VARCHAR), ' ', 'T') END AS time,
       c.concept_code AS analyte, CAST(m.value_as_number AS DOUBLE PRECISION) AS number,
       m.operator_concept_id AS operator, m.value_source_value AS value_text,
       COALESCE(CASE u.concept_code {ucum} ELSE u.concept_code END, m.unit_source_value) AS unit
FROM {q.table('measurement')} m
JOIN anchors a ON a.person_id = m.person_id
JOIN {q.table('person')} p ON p.person_id = m.person_id
JOIN {q.table('concept')} c ON c.concept_id = m.measurement_concept_id
LEFT JOIN {q.table('concept')} u ON u.concept_id = m.unit_concept_id AND m.unit_concept_id <> 0
WHERE ((c.vocabulary_id = 'LOINC' AND c.concept_code IN {_sql_list(loinc)})
       OR (c.vocabulary_id = '{LOCAL_VOCABULARY}' AND c.concept_code IN {_sql_list(local)}))
  AND {q.window(when)}
ORDER BY m.measurement_id"""


def treatment_sql(q: OmopQuery) -> str:
    """drug_exposure rows of listed treatments (by concept name) inside the window."""
    start = "COALESCE(de.drug_exposure_start_datetime, CAST(de.drug_exposure_start_date AS TIMESTAMP))"
    return f"""WITH {_anchors_cte(q)}
SELECT de.person_id, {start} AS t,
       CASE WHEN de.drug_exposure_start_datetime IS NULL THEN 1 ELSE 0 END AS date_only,
       LOWER(c.concept_name) AS drug, CAST(de.quantity AS DOUBLE PRECISION) AS dose,
       de.dose_unit_source_value AS unit, de.drug_exposure_end_datetime AS end_time
FROM {q.table('drug_exposure')} de
JOIN anchors a ON a.person_id = de.person_id
JOIN {q.table('concept')} c ON c.concept_id = de.drug_concept_id
WHERE {_name_match('c.concept_name', list(treatment_names()))} AND {q.window(start)}
ORDER BY de.person_id, t, de.drug_exposure_id"""


def observation_sql(q: OmopQuery) -> str:
    """observation rows named as an item, a covariate (any time) or a graded outcome (inside the window)."""
    names = list(observation_targets()) + list(outcome_names())
    covariates = [n for n, target in observation_targets().items() if target.startswith("patients.")]
    when = "COALESCE(o.observation_datetime, CAST(o.observation_date AS TIMESTAMP))"
    grade_like = " OR ".join(f"LOWER(o.observation_source_value) LIKE '{n.replace(chr(39), chr(39) * 2)}%grade%'"
                             for n in outcome_names())
    return f"""WITH {_anchors_cte(q)}
SELECT o.person_id, {when} AS t, CASE WHEN o.observation_datetime IS NULL THEN 1 ELSE 0 END AS date_only,
       LOWER(c.concept_name) AS concept_name, o.observation_source_value AS source_value,
       o.value_as_string AS value_text, CAST(o.value_as_number AS DOUBLE PRECISION) AS number,
       vc.concept_name AS value_concept, o.observation_id
FROM {q.table('observation')} o
JOIN anchors a ON a.person_id = o.person_id
LEFT JOIN {q.table('concept')} c ON c.concept_id = o.observation_concept_id AND o.observation_concept_id <> 0
LEFT JOIN {q.table('concept')} vc ON vc.concept_id = o.value_as_concept_id AND o.value_as_concept_id <> 0
WHERE (LOWER(c.concept_name) IN {_sql_list(names)} OR LOWER(o.observation_source_value) IN {_sql_list(names)}
       OR {grade_like})
  AND ({q.window(when)} OR LOWER(c.concept_name) IN {_sql_list(covariates)}
       OR LOWER(o.observation_source_value) IN {_sql_list(covariates)})
ORDER BY o.person_id, t, o.observation_id"""


def condition_sql(q: OmopQuery) -> str:
    """condition_occurrence rows named as CRS / ICANS (concept name, or source value starting so)."""
    names = list(outcome_names())
    when = "COALESCE(co.condition_start_datetime, CAST(co.condition_start_date AS TIMESTAMP))"
    starts = " OR ".join(f"LOWER(co.condition_source_value) LIKE '{n.replace(chr(39), chr(39) * 2)}%'" for n in names)
    return f"""WITH {_anchors_cte(q)}
SELECT co.person_id, {when} AS t,
       CASE WHEN co.condition_start_datetime IS NULL THEN 1 ELSE 0 END AS date_only,
       LOWER(c.concept_name) AS concept_name, co.condition_source_value AS source_value
FROM {q.table('condition_occurrence')} co
JOIN anchors a ON a.person_id = co.person_id
LEFT JOIN {q.table('concept')} c ON c.concept_id = co.condition_concept_id AND co.condition_concept_id <> 0
WHERE (LOWER(c.concept_name) IN {_sql_list(names)} OR {starts}) AND {q.window(when)}
ORDER BY co.person_id, t, co.condition_occurrence_id"""


def death_sql(q: OmopQuery) -> str:
    return f"""WITH {_anchors_cte(q)}
SELECT d.person_id, COALESCE(d.death_datetime, CAST(d.death_date AS TIMESTAMP)) AS t,
       CASE WHEN d.death_datetime IS NULL THEN 1 ELSE 0 END AS date_only
FROM {q.table('death')} d JOIN anchors a ON a.person_id = d.person_id
ORDER BY d.person_id, t"""


def lymphodepletion_sql(q: OmopQuery) -> str:
    """Per anchored person, the first lymphodepleting drug exposure on or before the anchor (in the window)."""
    start = "COALESCE(de.drug_exposure_start_datetime, CAST(de.drug_exposure_start_date AS TIMESTAMP))"
    return f"""WITH {_anchors_cte(q)}
SELECT person_id, t, date_only FROM (
  SELECT de.person_id, {start} AS t, CASE WHEN de.drug_exposure_start_datetime IS NULL THEN 1 ELSE 0 END AS date_only,
         ROW_NUMBER() OVER (PARTITION BY de.person_id ORDER BY {start}, de.drug_exposure_id) AS rn
  FROM {q.table('drug_exposure')} de
  JOIN anchors a ON a.person_id = de.person_id
  JOIN {q.table('concept')} c ON c.concept_id = de.drug_concept_id
  WHERE {_name_match('c.concept_name', LYMPHODEPLETION_DRUGS)} AND {start} <= a.anchor_time AND {q.window(start)}
) ranked WHERE rn = 1 ORDER BY person_id"""


def follow_up_sql(q: OmopQuery) -> str:
    """Per anchored person, the end date of the observation_period holding the anchor (the latest if several)."""
    return f"""WITH {_anchors_cte(q)}
SELECT op.person_id, MAX(op.observation_period_end_date) AS end_date, COUNT(*) AS n
FROM {q.table('observation_period')} op JOIN anchors a ON a.person_id = op.person_id
WHERE CAST(op.observation_period_start_date AS TIMESTAMP) <= a.anchor_time
  AND CAST(op.observation_period_end_date AS TIMESTAMP) + INTERVAL '1 days' > a.anchor_time
GROUP BY op.person_id ORDER BY op.person_id"""


def person_sql(q: OmopQuery) -> str:
    return f"""WITH {_anchors_cte(q)}
SELECT p.person_id, p.person_source_value, p.gender_concept_id, p.year_of_birth, p.month_of_birth,
       p.day_of_birth, a.anchor_time, a.anchor_date_only, a.product_name, a.product_code
FROM {q.table('person')} p JOIN anchors a ON a.person_id = p.person_id
ORDER BY p.person_id"""


# --- connecting and fetching -------------------------------------------------------------------------


def _masked(url: str) -> str:
    """The URL as it may be printed: password hidden; unparseable URLs are not echoed at all."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - any parse failure: print nothing of it
        return "cohort.url"


def _engine(url: str) -> sa.Engine:
    shown = _masked(url)
    try:
        parsed = sa.make_url(url)
    except Exception:  # noqa: BLE001
        raise UserError("cohort.url: not a SQLAlchemy URL (e.g. duckdb:///cdm.duckdb, "
                        "postgresql+psycopg://user@host/db)") from None
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "duckdb":
        database = parsed.database or ":memory:"
        if database != ":memory:" and not Path(database).is_file():
            raise UserError(f"{shown}: DuckDB database file not found")
        connect_args = {"read_only": True}
    try:
        return sa.create_engine(parsed, connect_args=connect_args)
    except Exception as exc:  # noqa: BLE001 - unknown dialect, driver not installed
        raise UserError(f"{shown}: cannot open ({type(exc).__name__}: unknown database type or driver)") from None


def _reason(exc: BaseException, url: str) -> str:
    """First line of a driver's message, with the password (if any) removed."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    password = None
    try:
        password = sa.make_url(url).password
    except Exception:  # noqa: BLE001
        pass
    if password:
        line = line.replace(str(password), "***")
    return line[:200]


def _fetch(conn: sa.Connection, sql: str) -> pa.Table:
    """Run one query; DuckDB hands its result over as Arrow, other databases go through SQLAlchemy rows."""
    if conn.dialect.name == "duckdb":
        return conn.connection.driver_connection.sql(sql).to_arrow_table()
    result = conn.execute(sa.text(sql.replace(":", "\\:")))  # a ':' in a literal is no bind parameter
    names = list(result.keys())
    rows = result.fetchall()
    return pa.table({name: pa.array([row[i] for row in rows]) for i, name in enumerate(names)})


_TYPES = {"t": pa.timestamp("us"), "end_time": pa.timestamp("us"), "anchor_time": pa.timestamp("us"),
          "number": pa.float64(), "dose": pa.float64(), "date_only": pa.int64(), "operator": pa.int64(),
          "person_id": pa.int64(), "gender_concept_id": pa.int64(), "year_of_birth": pa.int64(),
          "month_of_birth": pa.int64(), "day_of_birth": pa.int64(), "observation_id": pa.int64(),
          "anchor_date_only": pa.int64(), "end_date": pa.timestamp("us"), "n": pa.int64()}


def _typed(table: pa.Table) -> pa.Table:
    """Columns in the types the row builders expect, whatever the database returned (nulls, decimals)."""
    columns = []
    for name, column in zip(table.column_names, table.columns, strict=True):
        target = _TYPES.get(name, pa.string())
        if pa.types.is_timestamp(column.type) and column.type.tz is not None:
            column = pc.cast(column, pa.timestamp(column.type.unit, tz="UTC")).cast(pa.timestamp(column.type.unit))
        columns.append(column if column.type == target else pc.cast(column, target))
    return pa.table(columns, names=table.column_names)


def _count_rows(conn: sa.Connection, q: OmopQuery, tables: Sequence[str]) -> dict[str, int]:
    """Rows per source table (one COUNT query each)."""
    return {name: int(_fetch(conn, f"SELECT COUNT(*) AS n FROM {q.table(name)}").column(0)[0].as_py())
            for name in tables}


def _present_tables(engine: sa.Engine, q: OmopQuery, shown: str) -> list[str]:
    """The CDM tables present; a missing required one is a one-line error."""
    inspector = sa.inspect(engine)
    present = [name for name in (*REQUIRED_TABLES, *OPTIONAL_TABLES) if inspector.has_table(name, schema=q.schema)]
    where = f"schema '{q.schema}'" if q.schema else "the default schema"
    for name in REQUIRED_TABLES:
        if name not in present:
            raise UserError(f"{shown}: OMOP table '{name}' not found in {where} (cohort.schema?)")
    return present


# --- rows into canonical text ---------------------------------------------------------------------------


def _iso(t: pa.ChunkedArray | pa.Array, date_only: pa.ChunkedArray | pa.Array | None = None) -> pa.Array:
    """Timestamps as ISO 8601 text; date-only values (``date_only`` == 1) as the date alone."""
    t = pc.cast(t, pa.timestamp("s"), safe=False)  # whole seconds
    full = pc.replace_substring(pc.cast(t, pa.string()), " ", "T", max_replacements=1)
    if date_only is None:
        return full
    return pc.if_else(pc.equal(date_only, 1), pc.cast(pc.cast(t, pa.date32()), pa.string()), full)


def _number_text(numbers: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Doubles as the shortest text that reads back the same (Arrow's cast), nulls kept."""
    return pc.cast(numbers, pa.string())


def _ids(person_ids: pa.ChunkedArray | pa.Array, people: pa.Table) -> pa.Array:
    """person_id -> patient_id text (``people``: columns person_id, patient_id)."""
    return pc.take(people.column("patient_id"), pc.index_in(person_ids, value_set=people.column("person_id")))


def _measurement_values(table: pa.Table) -> pa.Array:
    """``value_as_number`` with its operator as text (``<1.5``), else ``value_source_value``."""
    ops = pa.array(list(OPERATORS), pa.int64())
    prefixes = pa.array(list(OPERATORS.values()), pa.string())
    prefix = pc.fill_null(pc.take(prefixes, pc.index_in(table.column("operator"), value_set=ops)), "")
    number = pc.binary_join_element_wise(prefix, _number_text(table.column("number")), "")
    return pc.if_else(pc.is_valid(table.column("number")), number, table.column("value_text"))


def measurements_table(table: pa.Table) -> pa.Table:
    """Canonical ``measurements`` text columns from :func:`measurement_sql` rows (ids, times and units are
    text from SQL already; UCUM codes the unit registry does not read are respelled there, see UCUM_TEXT)."""
    return pa.table({
        "patient_id": table.column("patient_id"),
        "time": table.column("time"),
        "analyte": table.column("analyte"),
        "value": _measurement_values(table),
        "unit": table.column("unit"),
        "source_table": pa.repeat(pa.scalar("measurement"), table.num_rows),
    })


def _frame(table: pa.Table) -> pd.DataFrame:
    """A small result as pandas objects (None for nulls), with ISO ``time`` text."""
    frame = table.to_pandas(types_mapper=None).astype(object)
    frame = frame.where(frame.notna(), None)
    if "t" in table.column_names:
        date_only = table.column("date_only") if "date_only" in table.column_names else None
        frame["time"] = pd.Series(_iso(table.column("t"), date_only).to_pylist(), index=frame.index, dtype=object)
    return frame


def _text(frame: pd.DataFrame, columns: dict[str, str], source: str) -> pa.Table:
    """Canonical text columns (``columns``: canonical name -> frame column) plus ``source_table``."""
    out = {name: pa.array([None if v is None or v is pd.NA or (isinstance(v, float) and v != v) else str(v)
                           for v in frame[col].tolist()], pa.string())
           for name, col in columns.items()}
    out["source_table"] = pa.repeat(pa.scalar(source), len(frame))
    return pa.table(out)


def _age(row: Any, anchor: pd.Timestamp) -> int | None:
    """Full years at the anchor; without month / day of birth, the year difference (may be one too high)."""
    if row.year_of_birth is None:
        return None
    birthday = (int(row.month_of_birth or 1), int(row.day_of_birth or 1))
    return anchor.year - int(row.year_of_birth) - int((anchor.month, anchor.day) < birthday)


def _product(name: str | None, code: str | None) -> str | None:
    names = product_names()
    if code and f"rxnorm:{code}" in names:
        return names[f"rxnorm:{code}"]
    return _prefix_lookup(name, names)


def _prefix_lookup(name: str | None, names: dict[str, str]) -> str | None:
    """``names`` entry for the whole normalised name, else for its longest listed first words."""
    if name is None:
        return None
    key = normalize_name(name)
    if key in names:
        return names[key]
    starts = [n for n in names if key.startswith(n + " ")]
    return names[max(starts, key=len)] if starts else None


def patients_frame(persons: pa.Table, q: OmopQuery) -> pd.DataFrame:
    """One row per anchored person: patient_id, anchor_time, age, sex, product (covariates added later)."""
    frame = _frame(persons)
    anchors = pd.to_datetime(pd.Series(persons.column("anchor_time").to_pylist(), dtype=object))
    ids = frame["person_source_value"] if q.patient_id == "person_source_value" else frame["person_id"]
    return pd.DataFrame({
        "person_id": frame["person_id"].astype("int64"),
        "patient_id": [None if v is None else str(v) for v in ids],
        "anchor_time": _iso(persons.column("anchor_time"), persons.column("anchor_date_only")).to_pylist(),
        "age": [_age(row, anchor) for row, anchor in zip(frame.itertuples(index=False), anchors, strict=True)],
        "sex": [GENDERS.get(int(g)) if g is not None else None for g in frame["gender_concept_id"]],
        "product": [_product(n, c) for n, c in zip(frame["product_name"], frame["product_code"], strict=True)],
    })


def _map_distinct(values: pa.ChunkedArray | pa.Array, fn: Any) -> pa.Array:
    """``fn`` applied once per distinct value (a text -> text or None), spread back to every row."""
    distinct = pc.unique(values)
    mapped = pa.array([fn(v) for v in distinct.to_pylist()], pa.string())
    return pc.take(mapped, pc.index_in(values, value_set=distinct))


def treatments_table(rows: pa.Table, people: pa.Table) -> pa.Table:
    return pa.table({
        "patient_id": _ids(rows.column("person_id"), people),
        "time": _iso(rows.column("t"), rows.column("date_only")),
        "drug": _map_distinct(rows.column("drug"), lambda d: _prefix_lookup(d, treatment_names())),
        "dose": _number_text(rows.column("dose")),
        "unit": rows.column("unit"),
        "end_time": _iso(rows.column("end_time")),
        "source_table": pa.repeat(pa.scalar("drug_exposure"), rows.num_rows),
    })


def _event_name(text: str | None) -> str | None:
    return outcome_names().get(normalize_name(text)) if text else None


def _split_grade(text: str | None, source: str) -> tuple[str | None, str | None]:
    """(text without its grade part, grade text) by omop_events.csv's pattern for ``source``."""
    if text is None:
        return None, None
    match = grade_patterns()[source].search(text)
    return (text[: match.start()], match.group("grade")) if match else (text, None)


def conditions_frame(rows: pa.Table) -> pd.DataFrame:
    """CRS / ICANS rows of condition_occurrence: event by concept name or source value, grade by pattern."""
    frame = _frame(rows)
    events, grades = [], []
    for concept, source in zip(frame["concept_name"], frame["source_value"], strict=True):
        bare, grade = _split_grade(source, "condition_occurrence")
        events.append(_event_name(concept) or _event_name(bare))
        grades.append(grade)
    frame["event"], frame["grade"] = events, grades
    frame["source_table"] = "condition_occurrence"
    return frame[frame["event"].notna()]


def _observation_values(table: pa.Table) -> pa.Array:
    """value_as_string, else value_as_number as text, else the name of value_as_concept_id's concept."""
    return pc.coalesce(table.column("value_text"), _number_text(table.column("number")), table.column("value_concept"))


def _classify(concept: str | None, source: str | None) -> tuple[str | None, str | None, str | None]:
    """(kind, target, grade in the source value) of an observation named ``concept`` / ``source``:
    ("item", O2_DEVICE, None), ("covariate", name, None), ("event", CRS, grade) or (None, None, None)."""
    targets = observation_targets()
    for name in (concept, source):
        target = targets.get(normalize_name(name)) if name else None
        if target:
            return ("covariate", target.split(".", 1)[1], None) if target.startswith("patients.") else ("item", target, None)
    bare, grade = _split_grade(source, "observation")
    event = _event_name(concept) or _event_name(bare)
    return ("event", event, grade) if event else (None, None, None)


def _event_grades(events: pd.DataFrame) -> list[str | None]:
    """An event observation's grade: value_as_number, else the source value's grade, else value_as_string's."""
    grades = []
    for number, from_source, text in zip(events["number_text"], events["grade"], events["value_text"], strict=True):
        if number is not None:
            grades.append(number)
        elif from_source is not None or text is None:
            grades.append(from_source)
        else:
            grades.append(_split_grade(str(text), "observation")[1] or str(text))
    return grades


@dataclass
class _Observations:
    """observation rows sorted into observations (items), events and folded covariates."""

    items: pa.Table  # person_id, time, item, value
    events: pd.DataFrame
    covariates: pd.DataFrame  # person_id, covariate, value (one row per person and covariate)
    folded: int


_NAME_SEPARATOR = "\x1f"


def split_observations(rows: pa.Table) -> _Observations:
    """Classify once per distinct (concept name, source value), not once per row; items stay in Arrow."""
    keys = pc.binary_join_element_wise(pc.fill_null(rows.column("concept_name"), ""),
                                       pc.fill_null(rows.column("source_value"), ""), _NAME_SEPARATOR)
    distinct = pc.unique(keys)
    kinds = [_classify(*[part or None for part in key.split(_NAME_SEPARATOR)]) for key in distinct.to_pylist()]
    where = pc.index_in(keys, value_set=distinct)
    kind, target, grade = (pc.take(pa.array([k[i] for k in kinds], pa.string()), where) for i in range(3))
    values = _observation_values(rows)
    table = rows.append_column("kind", kind).append_column("target", target).append_column("grade", grade) \
        .append_column("value", values).append_column("time", _iso(rows.column("t"), rows.column("date_only")))
    items = table.filter(pc.equal(kind, "item"))
    items = pa.table({"person_id": items.column("person_id"), "time": items.column("time"),
                      "item": items.column("target"), "value": items.column("value")})
    small = _frame(table.filter(pc.is_in(kind, value_set=pa.array(["event", "covariate"]))).drop_columns(["t"]))
    small["source_table"] = "observation"
    events = small[small["kind"] == "event"].copy()
    if len(events):
        events["number_text"] = [None if n is None else _number_text(pa.array([n], pa.float64()))[0].as_py()
                                 for n in events["number"]]
        events["grade"] = _event_grades(events)
    covariates = small[small["kind"] == "covariate"].drop_duplicates(["person_id", "target"], keep="first")
    return _Observations(
        items=items,
        events=events.rename(columns={"target": "event"}),
        covariates=covariates.rename(columns={"target": "covariate"})[["person_id", "covariate", "value"]],
        folded=len(covariates),
    )


def _add_covariates(patients: pd.DataFrame, covariates: pd.DataFrame) -> pd.DataFrame:
    """Covariate columns, in the order of omop_observations.csv, for the persons that have them."""
    if covariates.empty:
        return patients
    wide = covariates.pivot(index="person_id", columns="covariate", values="value")
    order = [t.split(".", 1)[1] for t in registry_table("omop_observations.csv")["target"] if t.startswith("patients.")]
    wide = wide[[c for c in order if c in wide.columns]]
    wide.index = wide.index.astype("int64")
    merged = patients.merge(wide, left_on="person_id", right_index=True, how="left")
    return merged.astype(object).where(merged.notna(), None)


def events_table(parts: Sequence[pd.DataFrame], people: pa.Table) -> pa.Table:
    """Canonical ``events`` from condition_occurrence, observation and death rows (in that order)."""
    columns = ["person_id", "event", "grade", "time", "source_table"]
    frame = pd.concat([p[columns] for p in parts if len(p)], ignore_index=True) if any(len(p) for p in parts) \
        else pd.DataFrame({c: pd.Series([], dtype=object) for c in columns})
    frame["patient_id"] = _ids(pa.array(frame["person_id"].astype("int64"), pa.int64()), people).to_pylist()
    out = _text(frame, {c: c for c in ("patient_id", "event", "grade", "time")}, "")
    return out.set_column(out.schema.get_field_index("source_table"), "source_table",
                          pa.array(frame["source_table"].astype(str).tolist(), pa.string()))


def _deaths(rows: pa.Table) -> pd.DataFrame:
    frame = _frame(rows)
    return frame.assign(event="DEATH", grade="5", source_table="death")


@dataclass
class OmopRead:
    """:func:`read_omop_counted`'s answer: the raw tables and, per source table, the rows in the database,
    the rows emitted and the rows folded into patient rows (the rest is ``out_of_scope``)."""

    raw: dict[str, RawTable]
    total: dict[str, int]
    emitted: dict[str, int]
    folded: dict[str, int]


def _raw(spec: Any, arrow: pa.Table, out_of_scope: dict[str, int]) -> RawTable:
    return RawTable(spec, Path("omop") / spec.name, arrow, None, out_of_scope)


def _out_of_scope(counts: OmopRead, *sources: str) -> dict[str, int]:
    return {s: counts.total[s] - counts.emitted.get(s, 0) - counts.folded.get(s, 0) for s in sources
            if s in counts.total}


def _is_driver_error(exc: BaseException) -> bool:
    return isinstance(exc, sa.exc.SQLAlchemyError) or type(exc).__module__.split(".")[0] in (
        "duckdb", "_duckdb", "psycopg", "psycopg2")


def _query_all(engine: sa.Engine, q: OmopQuery, present: list[str], limits: ReadLimits) -> dict[str, pa.Table]:
    """Every query's rows, typed, plus the row counts per source table (``counts``: one row per table)."""
    queries = {"person": person_sql, "measurement": measurement_sql, "drug_exposure": treatment_sql,
               "observation": observation_sql, "condition_occurrence": condition_sql, "death": death_sql,
               "observation_period": follow_up_sql, "lymphodepletion": lymphodepletion_sql}
    out: dict[str, pa.Table] = {}
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":  # timestamps and dates as text in ISO order, whatever the server's
            conn.execute(sa.text("SET DateStyle TO ISO"))
        for name, build in queries.items():
            if name in present or name == "lymphodepletion":
                out[name] = _typed(_fetch(conn, build(q)))
                if out[name].num_rows > limits.max_rows:
                    raise UserError(f"OMOP {name}: {out[name].num_rows} rows selected, more than "
                                    f"ingest.max_rows ({limits.max_rows})")
        totals = _count_rows(conn, q, [n for n in present if n != "concept"])
    out["counts"] = pa.table({"table": list(totals), "rows": list(totals.values())})
    return out


def _add_patient_times(patients: pd.DataFrame, rows: dict[str, pa.Table]) -> tuple[pd.DataFrame, dict[str, int]]:
    """``follow_up_end`` (the end date of the observation period holding the anchor, a date) and
    ``lymphodepletion_start`` columns when any person has one; the source rows they fold."""
    folded = {"drug_exposure": rows["lymphodepletion"].num_rows}
    times = {"lymphodepletion_start": rows["lymphodepletion"]}
    if "observation_period" in rows:
        period = rows["observation_period"]
        folded["observation_period"] = int(pc.sum(period.column("n")).as_py() or 0)
        times["follow_up_end"] = period.rename_columns(["person_id", "t", "n"]).append_column(
            "date_only", pa.repeat(pa.scalar(1, pa.int64()), period.num_rows))
    for column, table in sorted(times.items()):
        if table.num_rows:
            text = dict(zip(table.column("person_id").to_pylist(),
                            _iso(table.column("t"), table.column("date_only")).to_pylist(), strict=True))
            patients[column] = pd.Series([text.get(p) for p in patients["person_id"]], index=patients.index,
                                         dtype=object)
    return patients, folded


def _build(rows: dict[str, pa.Table], q: OmopQuery) -> tuple[OmopRead, dict[str, pa.Table]]:
    patients, time_folded = _add_patient_times(patients_frame(rows["person"], q), rows)
    people = pa.table({"person_id": pa.array(patients["person_id"], pa.int64()),
                       "patient_id": pa.array(patients["patient_id"], pa.string())})
    empty = pd.DataFrame({c: pd.Series([], dtype=object) for c in ("person_id", "event", "grade", "time",
                                                                    "source_table", "item", "value")})
    obs = split_observations(rows["observation"]) if "observation" in rows else None
    patients = _add_covariates(patients, obs.covariates if obs else empty.iloc[:0, :0])
    conditions = conditions_frame(rows["condition_occurrence"]) if "condition_occurrence" in rows else empty
    deaths = _deaths(rows["death"]) if "death" in rows else empty
    covariates = [c for c in patients.columns if c not in ("person_id",)]
    raw = {
        PATIENTS.name: _text(patients, {c: c for c in covariates}, "person"),
        MEASUREMENTS.name: measurements_table(rows["measurement"]),
        EVENTS.name: events_table([conditions, obs.events if obs else empty, deaths], people),
        TREATMENTS.name: treatments_table(rows["drug_exposure"], people),
    }
    if obs is not None:
        items = obs.items
        raw[OBSERVATIONS.name] = pa.table({
            "patient_id": _ids(items.column("person_id"), people), "time": items.column("time"),
            "item": items.column("item"), "value": items.column("value"),
            "source_table": pa.repeat(pa.scalar("observation"), items.num_rows)})
    emitted = {"person": len(patients), "measurement": rows["measurement"].num_rows,
               "drug_exposure": raw[TREATMENTS.name].num_rows, "condition_occurrence": len(conditions),
               "death": len(deaths), "observation": (obs.items.num_rows + len(obs.events)) if obs else 0}
    total = dict(zip(rows["counts"].column("table").to_pylist(), rows["counts"].column("rows").to_pylist(),
                     strict=True))
    folded = {"drug_exposure": len(patients) + time_folded["drug_exposure"], "observation": obs.folded if obs else 0,
              **({"observation_period": time_folded["observation_period"]} if "observation_period" in time_folded
                 else {})}
    return OmopRead({}, total, emitted, folded), raw


def read_omop_counted(
    url: str, schema: str | None = None, *, limits: ReadLimits = DEFAULT_LIMITS,
    window_days: tuple[float, float] = DEFAULT_WINDOW_DAYS, patient_id: str = "person_id",
) -> OmopRead:
    """:func:`read_omop` with the reconciliation counts per source table (see :class:`OmopRead`)."""
    if schema is not None and not _IDENTIFIER.match(schema):
        raise UserError("cohort.schema: a plain SQL identifier (letters, digits, underscore)")
    if patient_id not in ("person_id", "person_source_value"):
        raise UserError("patient_id: person_id or person_source_value")
    q = OmopQuery(schema, (float(window_days[0]), float(window_days[1])), patient_id)
    shown = _masked(url)
    engine = _engine(url)
    try:
        present = _present_tables(engine, q, shown)
        rows = _query_all(engine, q, present, limits)
    except UserError:
        raise
    except Exception as exc:
        if _is_driver_error(exc):
            raise UserError(f"{shown}: cannot read the OMOP database ({_reason(exc, url)})") from None
        raise
    finally:
        engine.dispose()
    counts, arrows = _build(rows, q)
    raw = {
        PATIENTS.name: _raw(PATIENTS, arrows[PATIENTS.name], _out_of_scope(counts, "person", "observation_period")),
        MEASUREMENTS.name: _raw(MEASUREMENTS, arrows[MEASUREMENTS.name], _out_of_scope(counts, "measurement")),
        EVENTS.name: _raw(EVENTS, arrows[EVENTS.name], _out_of_scope(counts, "condition_occurrence", "death")),
        TREATMENTS.name: _raw(TREATMENTS, arrows[TREATMENTS.name], _out_of_scope(counts, "drug_exposure")),
    }
    if OBSERVATIONS.name in arrows:
        raw[OBSERVATIONS.name] = _raw(OBSERVATIONS, arrows[OBSERVATIONS.name], _out_of_scope(counts, "observation"))
    counts.raw = raw
    return counts


def read_omop(
    url: str, schema: str | None = None, *, limits: ReadLimits = DEFAULT_LIMITS,
    window_days: tuple[float, float] = DEFAULT_WINDOW_DAYS, patient_id: str = "person_id",
) -> dict[str, RawTable]:
    """Read an OMOP CDM v5.4 database into the canonical raw tables (text), for ingest to validate.

    ``url``: a SQLAlchemy URL (``duckdb:///cdm.duckdb``, ``postgresql+psycopg://user@host/db``);
    ``schema``: the CDM schema (default: the connection's); ``window_days``: rows kept around the anchor;
    ``patient_id``: ``person_id`` (default) or ``person_source_value``. Database problems (bad URL, server
    down, missing table) raise one-line :class:`UserError` without the password.
    """
    return read_omop_counted(url, schema, limits=limits, window_days=window_days, patient_id=patient_id).raw


__all__ = ["LOCAL_VOCABULARY", "OPERATORS", "UCUM_TEXT", "OmopRead", "read_omop", "read_omop_counted", "registry_table"]
