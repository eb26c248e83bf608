"""``crs grade``: ingest tables -> ``data/graded/`` + ``reports/grading.json`` (docs/grading.md).

Shaped like :mod:`pipeline.featurize`: :func:`run` is pure (ingest tables in, graded tables and the
report out, through :func:`pipeline.grading.graded.graded_tables`, which ``crs predict`` uses too);
:func:`main` reads ``paths.interim_dir`` and writes ``paths.graded_dir`` atomically.

``cohort.grades`` decides where the CRS / ICANS grades that label and feature the landmarks come from:

* ``given``: the events table (ASTCT; a legacy scale is regraded where a mapping exists, and a grade
  with none is an error naming how many rows, never silently relabelled);
* ``derive``: ASTCT grades from raw observations (:mod:`pipeline.grading`); the events table may be
  absent, and its DEATH rows are kept (death ends the time at risk, and grade 5 is a death);
* ``compare``: given, plus agreement between given and derived grades in the report.

Outputs (``paths.graded_dir``): ``events.parquet`` (what featurize labels from), ``grades.parquet``
(the long grade timeline featurize reads), ``timeline.parquet`` (the derived timeline with the reason
for every grade; empty without grading inputs), ``daily_grades.parquet`` (worst grade per patient and day).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.config import Config
from pipeline.errors import UserError
from pipeline.grading.graded import SYNDROMES, GradeResult, graded_tables
from pipeline.io import atomic_dir, read_stage_parquet, write_json

#: Ingest tables the grade stage reads (``events``, ``treatments`` and ``observations`` optional).
INPUT_TABLES = ("patients", "measurements", "events", "treatments", "observations")


def run(config: Config, tables: dict[str, pd.DataFrame]) -> GradeResult:
    """Grade ``tables`` (ingest contract) under ``config.cohort.grades``. Pure."""
    return graded_tables(config, tables)


def read_inputs(directory: Path) -> dict[str, pd.DataFrame]:
    tables = {}
    for name in INPUT_TABLES:
        path = directory / f"{name}.parquet"
        if path.exists():
            tables[name] = read_stage_parquet(path, f"ingested {name}", "crs ingest")
        elif name in ("patients", "measurements"):
            raise UserError(f"{path}: not found; run `crs ingest` first")
    return tables


def main(config: Config) -> None:
    tables = read_inputs(Path(config.paths.interim_dir))
    result = run(config, tables)
    out_dir = Path(config.paths.graded_dir)
    with atomic_dir(out_dir) as tmp:
        for name, frame in result.tables.items():
            frame.to_parquet(tmp / f"{name}.parquet", index=False)
    write_json(result.report, config.paths.grading_report)
    r = result.report
    by_grade = "; ".join(f"{e} max grade " + ", ".join(f"{g}: {n}" for g, n in r["patients_by_max_grade"][e].items())
                         for e in SYNDROMES)
    agreement = r.get("agreement", {})
    kappa = ", ".join(f"{e} kappa {agreement[e]['cohen_kappa']:.3f}" for e in SYNDROMES if e in agreement)
    print(f"grade: {r['mode']} grades, {r['patients_assessed']} patients with observations; {by_grade}"
          + (f"; given vs derived: {kappa}" if kappa else "") + f" -> {out_dir}/, {config.paths.grading_report}")


__all__ = ["GradeResult", "main", "run"]
