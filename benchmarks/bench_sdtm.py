"""Benchmark: read an SDTM folder with a 5,000,000-row LB domain (20,000 subjects) and ingest it.

Usage: .venv/bin/python benchmarks/bench_sdtm.py [--rows 5000000] [--patients 20000] [--format csv|xpt|both]
       [--repeats 3]

Generates (once, cached in benchmarks/_work/sdtm_<rows>/) DM and LB as ``.csv`` and, with ``xpt``, as SAS
transport v5 files written by pyreadstat (slow to write: 184 s for 5 M rows here, once). Each run is a
fresh interpreter timing ``read_sdtm`` + ``ingest_tables`` (imports excluded from the figures it prints;
the wall time of the whole child is printed too). The issue-11 target: at most 15 s on 2 cores.
LB carries what real extracts do: LBTESTCD with LBTEST / LBLOINC, original and standard results, units,
censored cytokines (``<2.0``), a few unparseable results, "NOT DONE" rows (out of scope) and date-only
LBDTC values.

Figures (2 shared cores, 5 M LB rows, 20,000 subjects, medians of 3): CSV read_sdtm 3.96 s, read_sdtm + ingest
7.17 s; XPT read_sdtm 4.63 s, read_sdtm + ingest 7.66 s (pyreadstat alone reads the XPT observations at ~0.7 s
per 100k rows, ~35 s for 5 M: hence the vectorised reader in pipeline/adapters/xport.py).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

WORK = Path(__file__).resolve().parent / "_work"
# (LBTESTCD, LBTEST, LOINC, unit, typical level, log-scale spread)
TESTS = [("CRP", "C-reactive protein", "1988-5", "mg/L", 5.0, 0.8), ("FERRITIN", "Ferritin", "2276-4", "ng/mL", 800.0, 0.6),
         ("INTLK6", "Interleukin 6", "26881-3", "pg/mL", 20.0, 1.0), ("IFNG", "Interferon gamma", "", "pg/mL", 10.0, 1.0),
         ("LDH", "Lactate dehydrogenase", "2532-0", "U/L", 250.0, 0.4), ("PLAT", "Platelets", "777-3", "10^9/L", 150.0, 0.4),
         ("CREAT", "Creatinine", "2160-0", "mg/dL", 0.9, 0.3), ("HGB", "Hemoglobin", "718-7", "g/dL", 11.0, 0.15)]


def make_domains(n_rows: int, n_patients: int, seed: int = 0) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    ids = np.array([f"STUDY-{i:06d}" for i in range(n_patients)], dtype=object)
    anchor = np.datetime64("2023-01-01T08:00:00") + (rng.integers(0, 365 * 24, n_patients) * 3600).astype("timedelta64[s]")
    dm = pd.DataFrame({"STUDYID": "STUDY", "DOMAIN": "DM", "USUBJID": ids, "AGE": rng.integers(20, 85, n_patients).astype(float),
                       "SEX": np.where(rng.random(n_patients) < 0.6, "M", "F"), "ARM": "Axicabtagene ciloleucel",
                       "RFXSTDTC": np.datetime_as_string(anchor, unit="s")})
    patient = np.sort(rng.integers(0, n_patients, n_rows))
    test = rng.integers(0, len(TESTS), n_rows)
    offset_s = rng.integers(-7 * 24 * 3600, 28 * 24 * 3600, n_rows) // 60 * 60
    stamp = np.datetime_as_string(anchor[patient] + offset_s.astype("timedelta64[s]"), unit="s").astype(object)
    date_only = rng.random(n_rows) < 0.01
    stamp[date_only] = [s[:10] for s in stamp[date_only]]
    column = {k: np.array([t[i] for t in TESTS], dtype=object) for i, k in enumerate(("cd", "name", "loinc", "unit"))}
    level = np.array([t[4] for t in TESTS])[test] * np.exp(rng.normal(0, 1, n_rows) * np.array([t[5] for t in TESTS])[test])
    result = np.char.mod("%.4g", level).astype(object)
    result[(rng.random(n_rows) < 0.05) & np.isin(test, [2, 3])] = "<2.0"
    result[rng.random(n_rows) < 0.001] = "HEMOLYZED"
    not_done = rng.random(n_rows) < 0.002
    result[not_done] = ""
    lb = pd.DataFrame({"STUDYID": "STUDY", "DOMAIN": "LB", "USUBJID": ids[patient], "LBSEQ": np.arange(1, n_rows + 1.0),
                       "LBTESTCD": column["cd"][test], "LBTEST": column["name"][test], "LBLOINC": column["loinc"][test],
                       "LBORRES": result, "LBORRESU": np.where(not_done, "", column["unit"][test]).astype(object),
                       "LBSTAT": np.where(not_done, "NOT DONE", "").astype(object), "LBDTC": stamp})
    return {"DM": dm, "LB": lb}


def write(domains: dict[str, pd.DataFrame], folder: Path, fmt: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in domains.items():
        if fmt == "csv":
            table = pa.Table.from_pandas(frame.replace("", None), preserve_index=False)
            pacsv.write_csv(table, str(folder / f"{name.lower()}.csv"))
        else:
            import pyreadstat

            pyreadstat.write_xport(frame, str(folder / f"{name.lower()}.xpt"), table_name=name, file_format_version=5)


CHILD = """
import time, sys
from pipeline.adapters.sdtm import read_sdtm
from pipeline.ingestion import ingest_tables
start = time.perf_counter()
raw = read_sdtm(sys.argv[1])
read = time.perf_counter() - start
result = ingest_tables(raw)
total = time.perf_counter() - start
lb = result.report["files"]["measurements"]
print(f"{read:.2f} {total:.2f} {lb['rows_read']} {lb['rows_accepted']} {lb['rows_quarantined']} "
      f"{sum(raw['measurements'].out_of_scope.values())}")
"""


def timed(folder: Path) -> tuple[float, float, float, str]:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD, str(folder)], check=True, capture_output=True, text=True)
    wall = time.perf_counter() - start
    read, total, *counts = out.stdout.split()
    return float(read), float(total), wall, " ".join(counts)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--patients", type=int, default=20_000)
    parser.add_argument("--format", choices=["csv", "xpt", "both"], default="csv")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    formats = ["csv", "xpt"] if args.format == "both" else [args.format]
    domains = None
    for fmt in formats:
        folder = WORK / f"sdtm_{args.rows}" / fmt
        if not (folder / f"lb.{fmt}").exists():
            domains = domains if domains is not None else make_domains(args.rows, args.patients)
            start = time.perf_counter()
            write(domains, folder, fmt)
            print(f"wrote {fmt} ({args.rows:,} LB rows) in {time.perf_counter() - start:.0f} s", flush=True)
        size = (folder / f"lb.{fmt}").stat().st_size / 1e6
        runs = []
        for i in range(args.repeats):
            read, total, wall, counts = timed(folder)
            runs.append((read, total, wall))
            print(f"{fmt} run {i + 1}: read_sdtm {read:.2f} s, read_sdtm + ingest {total:.2f} s "
                  f"(child wall incl. imports {wall:.2f} s); rows read/accepted/quarantined/out of scope: {counts}",
                  flush=True)
        med = np.median(np.array(runs), axis=0)
        print(f"{fmt}: lb.{fmt} {size:.0f} MB; median read_sdtm {med[0]:.2f} s, read_sdtm + ingest {med[1]:.2f} s, "
              f"child wall {med[2]:.2f} s (target <= 15 s)")


if __name__ == "__main__":
    main()
