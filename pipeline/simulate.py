"""``crs simulate``: the DVC stage that writes the synthetic CAR-T cohort (the embedded default cohort).

The simulator itself lives in :mod:`pipeline.simulation` (one module per phase; the generative model
is documented with its equations in ``docs/simulator.md``). This module only resolves the stage
parameters (``run``, pure) and writes one CSV per table in ``TABLE_NAMES`` (patients, measurements,
events, treatments, observations) plus ``truth.json`` atomically (``main``).
``simulate_cohort`` is pure: same arguments, same tables, byte for byte once written.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pcsv

from pipeline.errors import UserError
from pipeline.io import atomic_dir, neutralise_formulas_arrow
from pipeline.simulation import ARMS, TABLE_NAMES, simulate_cohort, simulate_tables

__all__ = ["ARMS", "TABLE_NAMES", "main", "run", "simulate_cohort", "simulate_tables", "write_cohort"]


def run(config: Any, n_patients: int | None = None, seed: int | None = None
        ) -> tuple[dict[str, pa.Table], dict[str, Any]]:
    """The cohort for ``config.simulate`` (arguments that are not None win): (Arrow tables, truth). Pure."""
    sim = config.simulate
    return simulate_tables(sim.n_patients if n_patients is None else n_patients,
                           sim.seed if seed is None else seed, sim.faults)


def write_cohort(tables: dict[str, pa.Table], truth: dict[str, Any], out: str | Path) -> None:
    """Write one CSV per table in ``TABLE_NAMES`` and truth.json atomically (a failed run leaves no partial
    directory)."""
    options = pcsv.WriteOptions(include_header=False, quoting_style="none")
    with atomic_dir(out) as tmp:
        for name in TABLE_NAMES:
            table = neutralise_formulas_arrow(tables[name])
            with pa.OSFile(str(tmp / f"{name}.csv"), "wb") as sink:
                sink.write((",".join(table.column_names) + "\n").encode())
                pcsv.write_csv(table, sink, options)
        (tmp / "truth.json").write_text(json.dumps(truth, indent=2) + "\n")


def write_sdtm_cohort(tables: dict[str, pa.Table], truth: dict[str, Any], out: str | Path) -> None:
    """Write the cohort as SDTM ``.xpt`` domains plus truth.json atomically (pipeline/simulation/export_sdtm.py)."""
    from pipeline.simulation.export_sdtm import write_sdtm

    with atomic_dir(out) as tmp:
        write_sdtm(tables, tmp, "xpt")
        (tmp / "truth.json").write_text(json.dumps(truth, indent=2) + "\n")


#: The OMOP export's database file inside ``--out`` (``cohort.url: duckdb:///<out>/cdm.duckdb``).
OMOP_FILE = "cdm.duckdb"


def write_omop_cohort(tables: dict[str, pa.Table], truth: dict[str, Any], out: str | Path) -> None:
    """Write the cohort as an OMOP CDM v5.4 subset in DuckDB (``<out>/cdm.duckdb``) plus truth.json,
    atomically (pipeline/simulation/export_omop.py); person_source_value holds the patient ids."""
    from pipeline.simulation.export_omop import export_omop

    with atomic_dir(out) as tmp:
        export_omop(tables, str(tmp / OMOP_FILE))
        (tmp / "truth.json").write_text(json.dumps(truth, indent=2) + "\n")


#: ``crs simulate --format``: how the cohort is written.
WRITERS = {"canonical": write_cohort, "sdtm": write_sdtm_cohort, "omop": write_omop_cohort}


def main(config: Any, out: str | Path | None = None, n_patients: int | None = None,
         seed: int | None = None, fmt: str = "canonical") -> dict[str, Any]:
    """``crs simulate``: write the cohort for ``config.simulate`` (CLI overrides win) to ``out`` (default
    ``paths.simulated_cohort``) in format ``fmt`` (a key of ``WRITERS``); returns truth."""
    if fmt not in WRITERS:
        raise UserError(f"simulate: unknown format '{fmt}' (one of {', '.join(WRITERS)})")
    start = time.perf_counter()
    out = out or config.paths.simulated_cohort
    tables, truth = run(config, n_patients=n_patients, seed=seed)
    WRITERS[fmt](tables, truth, out)
    rows = truth["tables"]["measurements"]["rows_written"]
    print(f"simulate: {truth['n_patients']} patients, {rows} measurement rows -> {out} "
          f"({time.perf_counter() - start:.1f} s)")
    return truth
