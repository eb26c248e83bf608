"""OMOP CDM v5.4 adapter: simulate -> OMOP (DuckDB, PostgreSQL) -> read_omop + ingest == the canonical path;
a hand-built extract with real-world faults reconciles exactly; database problems are one-line errors."""

from __future__ import annotations

import socket
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pytest

from pipeline.adapters.canonical import read_cohort
from pipeline.adapters.omop import read_omop, read_omop_counted
from pipeline.errors import UserError
from pipeline.ingestion import ingest_tables
from pipeline.simulate import write_cohort
from pipeline.simulation import simulate_tables
from pipeline.simulation.export_omop import DDL, export_omop
from tests.pipeline.postgres import postgres_url  # noqa: F401 - pytest fixture

N_PATIENTS = 60


@pytest.fixture(scope="module")
def simulated(tmp_path_factory) -> tuple[dict, dict]:
    """The simulated cohort's tables and the canonical path's accepted tables."""
    tables, truth = simulate_tables(N_PATIENTS, 7, True)
    directory = tmp_path_factory.mktemp("canonical") / "cohort"
    write_cohort(tables, truth, directory)
    return tables, ingest_tables(read_cohort(directory)).tables


def _same_rows(left: pd.DataFrame, right: pd.DataFrame) -> None:
    """Equal tables; columns compared by name (patients' covariate order may differ), source_table dropped."""
    left, right = (t.drop(columns=["source_table"], errors="ignore") for t in (left, right))
    assert sorted(left.columns) == sorted(right.columns)
    pd.testing.assert_frame_equal(left.reset_index(drop=True), right[left.columns].reset_index(drop=True))


def _assert_round_trip(url: str, schema: str | None, expected: dict[str, pd.DataFrame]) -> None:
    read = read_omop_counted(url, schema, patient_id="person_source_value")
    result = ingest_tables(read.raw)
    for name, table in expected.items():
        _same_rows(table, result.tables[name])
    for source, total in read.total.items():
        out = sum(t.out_of_scope.get(source, 0) for t in read.raw.values())
        assert total == read.emitted.get(source, 0) + read.folded.get(source, 0) + out, source


def test_round_trip_duckdb(simulated, tmp_path: Path) -> None:
    tables, expected = simulated
    database = tmp_path / "cdm.duckdb"
    export_omop(tables, database)
    _assert_round_trip(f"duckdb:///{database}", None, expected)


def test_round_trip_postgres(simulated, postgres_url: str) -> None:  # noqa: F811 - the fixture
    tables, expected = simulated
    export_omop(tables, postgres_url, schema="cdm")
    _assert_round_trip(postgres_url, "cdm", expected)


def test_round_trip_lymphodepletion_and_follow_up(tmp_path: Path) -> None:
    """lymphodepletion_start -> a fludarabine drug_exposure; follow_up_end (a date) -> observation_period."""
    tables, truth = simulate_tables(20, 3, False)
    patients = tables["patients"].to_pandas()
    anchors = pd.to_datetime(patients["anchor_time"])
    patients["lymphodepletion_start"] = (anchors - pd.Timedelta(hours=100)).dt.strftime("%Y-%m-%dT%H:%M:%S")
    patients["follow_up_end"] = (anchors + pd.Timedelta(days=20)).dt.strftime("%Y-%m-%d")
    tables = {**tables, "patients": patients}
    write_cohort({k: pa.Table.from_pandas(v, preserve_index=False) if isinstance(v, pd.DataFrame) else v
                  for k, v in tables.items()}, truth, tmp_path / "cohort")
    expected = ingest_tables(read_cohort(tmp_path / "cohort")).tables
    assert "lymphodepletion_start_hours" in expected["patients"].columns
    export_omop(tables, tmp_path / "cdm.duckdb")
    _assert_round_trip(f"duckdb:///{tmp_path / 'cdm.duckdb'}", None, expected)


def test_patient_id_is_person_id_by_default(simulated, tmp_path: Path) -> None:
    database = tmp_path / "cdm.duckdb"
    export_omop(simulated[0], database)
    raw = read_omop(f"duckdb:///{database}")
    assert raw["patients"].arrow.column("patient_id").to_pylist()[:3] == ["1", "2", "3"]


# --- a hand-built extract with the faults real extracts have ------------------------------------------------

CONCEPTS = [  # concept_id, name, domain, vocabulary, class, code
    (1, "tisagenlecleucel", "Drug", "RxNorm", "Ingredient", "x1"),
    (2, "tocilizumab 20 MG/ML Injectable Solution", "Drug", "RxNorm", "Clinical Drug", "x2"),
    (3, "acyclovir", "Drug", "RxNorm", "Ingredient", "x3"),
    (4, "fludarabine", "Drug", "RxNorm", "Ingredient", "x4"),
    (10, "C reactive protein [Mass/volume] in Serum or Plasma", "Measurement", "LOINC", "Lab Test", "1988-5"),
    (11, "Interleukin 6 [Mass/volume] in Serum or Plasma", "Measurement", "LOINC", "Lab Test", "26881-3"),
    (12, "Glucose [Mass/volume] in Serum or Plasma", "Measurement", "LOINC", "Lab Test", "2345-7"),
    (20, "milligram per liter", "Unit", "UCUM", "Unit", "mg/L"),
    (21, "picogram per milliliter", "Unit", "UCUM", "Unit", "pg/mL"),
    (30, "Cytokine release syndrome", "Condition", "SNOMED", "Clinical Finding", "x30"),
    (31, "Essential hypertension", "Condition", "SNOMED", "Clinical Finding", "x31"),
]
ROWS = {
    "person": ["(1, 8507, 1960, 6, 15, 'MRN-1')", "(2, 8532, 1970, 1, 1, 'MRN-2')"],
    "drug_exposure": [
        "(1, 1, 1, DATE '2022-03-01', TIMESTAMP '2022-03-01 10:00:00', NULL, NULL)",  # anchor (folded)
        "(2, 1, 1, DATE '2022-05-01', TIMESTAMP '2022-05-01 10:00:00', NULL, NULL)",  # second CAR-T: out of scope
        "(3, 1, 2, DATE '2022-03-03', TIMESTAMP '2022-03-03 08:00:00', 8, 'mg/kg')",  # tocilizumab: emitted
        "(4, 1, 3, DATE '2022-03-03', TIMESTAMP '2022-03-03 09:00:00', 400, 'mg')",  # drug not listed
        "(5, 2, 2, DATE '2022-03-03', TIMESTAMP '2022-03-03 08:00:00', 8, 'mg/kg')",  # person without anchor
        "(6, 1, 4, DATE '2022-02-25', TIMESTAMP '2022-02-25 09:00:00', 30, 'mg/m2')",  # lymphodepletion (folded)
        "(7, 1, 4, DATE '2022-02-26', TIMESTAMP '2022-02-26 09:00:00', 30, 'mg/m2')",  # its 2nd day: out of scope
    ],
    "observation_period": ["(1, 1, DATE '2021-01-01', DATE '2022-06-30', 32817)",  # holds the anchor: folded
                           "(2, 2, DATE '2021-01-01', DATE '2022-06-30', 32817)"],  # no anchor: out of scope
    "measurement": [
        "(1, 1, 10, DATE '2022-03-02', TIMESTAMP '2022-03-02 06:00:00', NULL, 12.5, 20, 'mg/L', NULL)",
        "(2, 1, 10, DATE '2022-03-02', TIMESTAMP '2022-03-02 18:00:00', NULL, 3.1, 0, 'mg/dL', NULL)",  # unit text only
        "(3, 1, 11, DATE '2022-03-03', NULL, 4171756, 1.5, 21, 'pg/mL', NULL)",  # date only, censored '<1.5'
        "(4, 1, 0, DATE '2022-03-02', TIMESTAMP '2022-03-02 06:00:00', NULL, 7, 0, 'x', NULL)",  # no concept
        "(5, 1, 12, DATE '2022-03-02', TIMESTAMP '2022-03-02 06:00:00', NULL, 5.5, 0, 'mmol/L', NULL)",  # unmapped
        "(6, 1, 11, DATE '2022-03-02', TIMESTAMP '2022-03-02 06:00:00', NULL, NULL, 21, 'pg/mL', 'hemolyzed')",
        "(7, 1, 11, DATE '2023-09-02', TIMESTAMP '2023-09-02 06:00:00', NULL, 9, 21, 'pg/mL', NULL)",  # after window
        "(8, 2, 10, DATE '2022-03-02', TIMESTAMP '2022-03-02 06:00:00', NULL, 9, 20, 'mg/L', NULL)",  # no anchor
        "(9, 1, 11, DATE '2022-03-02', TIMESTAMP '2022-03-02 07:00:00', NULL, -4, 21, 'pg/mL', NULL)",  # out of range
    ],
    "condition_occurrence": [
        "(1, 1, 30, DATE '2022-03-02', TIMESTAMP '2022-03-02 20:00:00', 'CRS grade 3')",
        "(2, 1, 0, DATE '2022-03-04', NULL, 'ICANS')",  # no grade: emitted, quarantined
        "(3, 1, 31, DATE '2022-03-02', NULL, 'I10')",  # unrelated: out of scope
        "(4, 1, 0, DATE '2022-03-05', TIMESTAMP '2022-03-05 01:00:00', 'Immune effector cell-associated "
        "neurotoxicity syndrome, Grade II')",
    ],
    "observation": [
        "(1, 1, 0, DATE '2022-03-02', TIMESTAMP '2022-03-02 09:00:00', NULL, 'nasal cannula', 'O2 device')",
        "(2, 1, 0, DATE '2022-03-02', TIMESTAMP '2022-03-02 09:00:00', 8, NULL, 'ICE score')",
        "(3, 1, 0, DATE '2022-03-01', NULL, NULL, 'LBCL', 'disease')",  # covariate: folded
        "(4, 1, 0, DATE '2022-03-02', NULL, NULL, 'never', 'smoking status')",  # unrelated: out of scope
        "(5, 1, 0, DATE '2022-03-02', TIMESTAMP '2022-03-02 21:00:00', 2, NULL, 'CRS')",  # event, grade 2
    ],
    "death": ["(1, DATE '2022-04-01', NULL)"],
}
COLUMNS = {
    "person": "person_id, gender_concept_id, year_of_birth, month_of_birth, day_of_birth, person_source_value",
    "drug_exposure": "drug_exposure_id, person_id, drug_concept_id, drug_exposure_start_date, "
                     "drug_exposure_start_datetime, quantity, dose_unit_source_value",
    "measurement": "measurement_id, person_id, measurement_concept_id, measurement_date, measurement_datetime, "
                   "operator_concept_id, value_as_number, unit_concept_id, unit_source_value, value_source_value",
    "condition_occurrence": "condition_occurrence_id, person_id, condition_concept_id, condition_start_date, "
                            "condition_start_datetime, condition_source_value",
    "observation": "observation_id, person_id, observation_concept_id, observation_date, observation_datetime, "
                   "value_as_number, value_as_string, observation_source_value",
    "death": "person_id, death_date, death_datetime",
    "observation_period": "observation_period_id, person_id, observation_period_start_date, "
                          "observation_period_end_date, period_type_concept_id",
}


def _hand_built(path: Path) -> str:
    con = duckdb.connect(str(path))
    for name, columns in DDL.items():
        con.execute(f"CREATE TABLE {name} ({columns.replace(' NOT NULL', '')})")
    for concept in CONCEPTS:
        con.execute("INSERT INTO concept (concept_id, concept_name, domain_id, vocabulary_id, concept_class_id, "
                    "concept_code, valid_start_date, valid_end_date) VALUES (?, ?, ?, ?, ?, ?, "
                    "DATE '1970-01-01', DATE '2099-12-31')", list(concept))
    for name, rows in ROWS.items():
        con.execute(f"INSERT INTO {name} ({COLUMNS[name]}) VALUES {', '.join(rows)}")
    con.close()
    return f"duckdb:///{path}"


def test_hand_built_extract_reconciles(tmp_path: Path) -> None:
    read = read_omop_counted(_hand_built(tmp_path / "extract.duckdb"), window_days=(-30, 90))
    assert read.total == {"person": 2, "drug_exposure": 7, "measurement": 9, "observation": 5,
                          "condition_occurrence": 4, "death": 1, "observation_period": 2}
    assert read.emitted == {"person": 1, "drug_exposure": 1, "measurement": 5, "observation": 3,
                            "condition_occurrence": 3, "death": 1}
    assert read.folded == {"drug_exposure": 2, "observation": 1, "observation_period": 1}
    out = {s: n for t in read.raw.values() for s, n in t.out_of_scope.items()}
    assert out == {"person": 1, "drug_exposure": 4, "measurement": 4, "observation": 1,
                   "condition_occurrence": 1, "death": 0, "observation_period": 1}
    for source, total in read.total.items():
        assert total == read.emitted.get(source, 0) + read.folded.get(source, 0) + out[source], source

    measurements = read.raw["measurements"].arrow.to_pandas()
    assert measurements["value"].tolist() == ["12.5", "3.1", "<1.5", "hemolyzed", "-4"]
    assert measurements["unit"].tolist() == ["mg/L", "mg/dL", "pg/mL", "pg/mL", "pg/mL"]
    assert measurements["time"].iloc[2] == "2022-03-03"  # date only: passed as a date, ingest decides
    patients = read.raw["patients"].arrow.to_pylist()
    assert patients == [{"patient_id": "1", "anchor_time": "2022-03-01T10:00:00", "age": "61", "sex": "M",
                         "product": "tisa-cel", "disease": "LBCL", "follow_up_end": "2022-06-30",
                         "lymphodepletion_start": "2022-02-25T09:00:00", "source_table": "person"}]
    events = read.raw["events"].arrow
    assert list(zip(events.column("event").to_pylist(), events.column("grade").to_pylist(), strict=True)) == [
        ("CRS", "3"), ("ICANS", None), ("ICANS", "II"), ("CRS", "2"), ("DEATH", "5")]
    assert events.column("source_table").to_pylist() == ["condition_occurrence"] * 3 + ["observation", "death"]
    assert read.raw["treatments"].arrow.column("drug").to_pylist() == ["tocilizumab"]

    result = ingest_tables(read.raw)
    files = result.report["files"]
    for name, table in read.raw.items():
        counts = files[name]
        assert counts["rows_read"] == table.n_rows
        assert counts["rows_read"] == counts["rows_accepted"] + counts["rows_quarantined"] + counts["duplicates_dropped"]
        for source, by_source in counts["by_source_table"].items():
            assert by_source["out_of_scope"] == table.out_of_scope.get(source, 0)
    assert files["measurements"]["by_source_table"]["measurement"]["out_of_scope"] == 4
    assert files["events"]["quarantine_by_reason"] == {"missing_value": 1}
    crp = result.tables["measurements"]
    assert 31.0 in crp.loc[crp["analyte"] == "CRP", "value"].tolist()  # 3.1 mg/dL -> mg/L


# --- database problems: one line, no password ----------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("url, expected", [
    ("not a url", "not a SQLAlchemy URL"),
    ("nosuchdb://host/db", "cannot open"),
    ("duckdb:////nonexistent/dir/cdm.duckdb", "DuckDB database file not found"),
])
def test_bad_url_is_one_line_error(url: str, expected: str) -> None:
    with pytest.raises(UserError) as caught:
        read_omop(url)
    assert expected in str(caught.value) and "\n" not in str(caught.value)


def test_unreachable_server_hides_password() -> None:
    url = f"postgresql+psycopg://alice:s3cret-pw@127.0.0.1:{_closed_port()}/cdm"
    with pytest.raises(UserError) as caught:
        read_omop(url)
    message = str(caught.value)
    assert "s3cret-pw" not in message and "\n" not in message and "cannot read" in message


def test_missing_table_is_named(tmp_path: Path) -> None:
    path = tmp_path / "partial.duckdb"
    con = duckdb.connect(str(path))
    con.execute(f"CREATE TABLE person ({DDL['person']})")
    con.close()
    with pytest.raises(UserError, match="OMOP table 'drug_exposure' not found in the default schema"):
        read_omop(f"duckdb:///{path}")
    with pytest.raises(UserError, match="schema 'cdm'"):
        read_omop(f"duckdb:///{path}", "cdm")
    with pytest.raises(UserError, match="plain SQL identifier"):
        read_omop(f"duckdb:///{path}", "cdm; drop table person")
