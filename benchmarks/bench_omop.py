"""Benchmark: read an OMOP CDM v5.4 DuckDB database with read_omop and ingest it (issue 11).

Usage: .venv/bin/python benchmarks/bench_omop.py [--persons 20000] [--relevant 5000000]
       [--unrelated 50000000] [--repeats 3] [--threads 2] [--rebuild]

The database is built once in benchmarks/_work/omop/ (with DuckDB's own SQL: a few minutes) and reused:
``--persons`` persons, each with a CAR-T anchor; ``--relevant`` measurements of 10 registry LOINC concepts
within the anchor window (5% censored ``<x`` cytokines, a few date-only rows); ``--unrelated`` measurements of
300 other concept ids (LOINC codes the registry does not know, and concept_id 0) that the concept filter must
skip; treatments, observations, conditions and deaths in proportion. Each repeat runs read_omop + ingest_tables
in a fresh interpreter limited to ``--threads`` DuckDB / Arrow threads, and prints the times and peak RSS.
The issue-11 target: at most 20 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

WORK = Path(__file__).resolve().parent / "_work" / "omop"
ROOT = Path(__file__).resolve().parents[1]
# (LOINC code, UCUM code, level, log spread)
ANALYTES = [("1988-5", "mg/L", 5.0, 0.8), ("2276-4", "ng/mL", 800.0, 0.6), ("26881-3", "pg/mL", 20.0, 1.0),
            ("27415-9", "pg/mL", 10.0, 1.0), ("2532-0", "U/L", 250.0, 0.4), ("777-3", "10*9/L", 150.0, 0.4),
            ("2160-0", "mg/dL", 0.9, 0.3), ("8310-5", "Cel", 37.0, 0.02), ("751-8", "10*9/L", 3.0, 0.5),
            ("718-7", "g/dL", 11.0, 0.2)]
N_UNRELATED_CONCEPTS = 300


def _concepts(con) -> None:
    rows = [(1, "tisagenlecleucel", "Drug", "RxNorm", "x1"), (2, "axicabtagene ciloleucel", "Drug", "RxNorm", "x2"),
            (3, "tocilizumab", "Drug", "RxNorm", "x3"), (4, "dexamethasone", "Drug", "RxNorm", "x4"),
            (5, "Cytokine release syndrome", "Condition", "SNOMED", "x5")]
    rows += [(100 + i, f"analyte {code}", "Measurement", "LOINC", code) for i, (code, *_) in enumerate(ANALYTES)]
    units = sorted({unit for _, unit, *_ in ANALYTES})
    rows += [(200 + i, unit, "Unit", "UCUM", unit) for i, unit in enumerate(units)]
    rows += [(1000 + i, f"unrelated {i}", "Measurement", "LOINC", f"9{i:04d}-0") for i in range(N_UNRELATED_CONCEPTS)]
    con.executemany("INSERT INTO concept (concept_id, concept_name, domain_id, vocabulary_id, concept_class_id, "
                    "concept_code, valid_start_date, valid_end_date) VALUES (?, ?, ?, ?, 'x', ?, DATE '1970-01-01', "
                    "DATE '2099-12-31')", rows)


def _measurements(con, relevant: int, unrelated: int, persons: int) -> None:
    units = sorted({unit for _, unit, *_ in ANALYTES})
    cases = " ".join(f"WHEN {i} THEN {level} * exp(({spread}) * (random() * 2 - 1) * 2)"
                     for i, (_, _, level, spread) in enumerate(ANALYTES))
    unit_ids = " ".join(f"WHEN {i} THEN {200 + units.index(unit)}" for i, (_, unit, *_) in enumerate(ANALYTES))
    con.execute(f"""
        INSERT INTO measurement (measurement_id, person_id, measurement_concept_id, measurement_date,
            measurement_datetime, measurement_type_concept_id, operator_concept_id, value_as_number,
            unit_concept_id, unit_source_value)
        SELECT i, p, 100 + a, CAST(t AS DATE), CASE WHEN i % 1000 = 0 THEN NULL ELSE t END, 32817,
               CASE WHEN a IN (2, 3) AND i % 20 = 0 THEN 4171756 END,
               round(CASE a {cases} END, 2), CASE a {unit_ids} END, NULL
        FROM (SELECT i, p, a, {_anchor('p')} + to_seconds(CAST((hash(i * 7) % (37 * 86400)) AS BIGINT) - 7 * 86400) AS t
              FROM (SELECT i, CAST(1 + (hash(i) % {persons}) AS BIGINT) AS p, i % {len(ANALYTES)} AS a
                    FROM range({relevant}) r(i)) ids) g""")
    con.execute(f"""
        INSERT INTO measurement (measurement_id, person_id, measurement_concept_id, measurement_date,
            measurement_datetime, measurement_type_concept_id, value_as_number, unit_concept_id)
        SELECT {relevant} + i, 1 + (hash(i) % {persons}),
               CASE WHEN i % 50 = 0 THEN 0 ELSE 1000 + (i % {N_UNRELATED_CONCEPTS}) END,
               DATE '2023-06-01', TIMESTAMP '2023-06-01 08:00:00', 32817, (i % 1000) / 10.0, 0
        FROM range({unrelated}) r(i)""")


def _anchor(person: str) -> str:
    """SQL: the CAR-T infusion time of person ``person`` (spread over 2023)."""
    return f"(TIMESTAMP '2023-01-01 10:00:00' + to_days(CAST({person} % 365 AS INTEGER)))"


def _small_tables(con, persons: int) -> None:
    con.execute(f"""INSERT INTO person (person_id, gender_concept_id, year_of_birth, race_concept_id,
        ethnicity_concept_id, person_source_value)
        SELECT i, CASE WHEN i % 2 = 0 THEN 8507 ELSE 8532 END, 1940 + i % 60, 0, 0, 'P' || i
        FROM range(1, {persons} + 1) r(i)""")
    con.execute(f"""INSERT INTO drug_exposure (drug_exposure_id, person_id, drug_concept_id, drug_exposure_start_date,
        drug_exposure_start_datetime, drug_exposure_end_date, drug_type_concept_id, quantity, dose_unit_source_value)
        SELECT i, i, 1 + i % 2, CAST({_anchor('i')} AS DATE), {_anchor('i')}, CAST({_anchor('i')} AS DATE), 32817,
               NULL, NULL FROM range(1, {persons} + 1) r(i)
        UNION ALL
        SELECT {persons} + i, p, 3 + i % 2, CAST(t AS DATE), t, CAST(t AS DATE), 32817, 8, 'mg/kg'
        FROM (SELECT i, 1 + i % {persons} AS p, {_anchor('(1 + i % ' + str(persons) + ')')} + to_hours(i // {persons}) AS t
              FROM range(5 * {persons}) r(i)) g""")
    con.execute(f"""INSERT INTO condition_occurrence (condition_occurrence_id, person_id, condition_concept_id,
        condition_start_date, condition_start_datetime, condition_type_concept_id, condition_source_value)
        SELECT i, p, 5, CAST(t AS DATE), t, 32817, 'CRS grade ' || (1 + i % 4)
        FROM (SELECT i, 1 + i % {persons} AS p, {_anchor('(1 + i % ' + str(persons) + ')')} + to_hours(30) AS t
              FROM range({persons}) r(i)) g""")
    con.execute(f"""INSERT INTO observation (observation_id, person_id, observation_concept_id, observation_date,
        observation_datetime, observation_type_concept_id, value_as_string, observation_source_value)
        SELECT i, p, 0, CAST(t AS DATE), t, 32817, CASE WHEN i % 3 = 0 THEN 'nasal cannula' ELSE 'room air' END,
               'O2 device'
        FROM (SELECT i, 1 + i % {persons} AS p, {_anchor('(1 + i % ' + str(persons) + ')')} + to_hours(i // {persons}) AS t
              FROM range(10 * {persons}) r(i)) g""")


def build(path: Path, persons: int, relevant: int, unrelated: int) -> None:
    import duckdb

    sys.path.insert(0, str(ROOT))
    from pipeline.simulation.export_omop import DDL

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".building")
    tmp.unlink(missing_ok=True)
    con = duckdb.connect(str(tmp))
    for name, columns in DDL.items():
        con.execute(f"CREATE TABLE {name} ({columns})")
    _concepts(con)
    _small_tables(con, persons)
    _measurements(con, relevant, unrelated, persons)
    con.close()
    tmp.rename(path)


CHILD = """
import json, resource, sys, time
t0 = time.perf_counter()
sys.path.insert(0, {root!r})
import duckdb, pyarrow
pyarrow.set_cpu_count({threads}); pyarrow.set_io_thread_count({threads})
from pipeline.adapters.omop import read_omop_counted
from pipeline.ingestion import ingest_tables
t1 = time.perf_counter()
read = read_omop_counted({url!r})
t2 = time.perf_counter()
result = ingest_tables(read.raw)
t3 = time.perf_counter()
print(json.dumps({{"import_s": t1 - t0, "read_s": t2 - t1, "ingest_s": t3 - t2, "total_s": t3 - t1,
    "rows_read": result.report["rows_read"], "rows_accepted": result.report["rows_accepted"],
    "measurements_emitted": read.emitted["measurement"], "measurement_rows": read.total["measurement"],
    "out_of_scope": {{k: v for t in read.raw.values() for k, v in t.out_of_scope.items()}},
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", type=int, default=20_000)
    parser.add_argument("--relevant", type=int, default=5_000_000)
    parser.add_argument("--unrelated", type=int, default=50_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()
    path = WORK / f"cdm_{args.persons}_{args.relevant}_{args.unrelated}.duckdb"
    if args.rebuild or not path.exists():
        start = time.perf_counter()
        build(path, args.persons, args.relevant, args.unrelated)
        print(f"built {path} in {time.perf_counter() - start:.0f} s ({path.stat().st_size / 1e9:.1f} GB)")
    # DuckDB reads its thread count from the connection; a read-only open cannot SET it before the first query,
    # so the child limits the process to --threads cores instead (taskset), Arrow to --threads threads.
    code = CHILD.format(root=str(ROOT), threads=args.threads, url=f"duckdb:///{path}")
    cores = ",".join(str(i) for i in range(args.threads))
    runs = []
    for _ in range(args.repeats):
        out = subprocess.run(["taskset", "-c", cores, sys.executable, "-c", code], capture_output=True, text=True,
                             check=True, cwd=ROOT)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(runs[-1]))
    for key in ("read_s", "ingest_s", "total_s", "peak_rss_mb"):
        print(f"median {key}: {statistics.median(r[key] for r in runs):.1f}")


if __name__ == "__main__":
    main()
