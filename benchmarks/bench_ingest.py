"""Benchmark: ingest a 5,000,000-row measurements CSV (20,000 patients).

Usage: .venv/bin/python benchmarks/bench_ingest.py [--rows 5000000] [--patients 20000] [--repeats 3]
                                                   [--chunk-rows N]

Prints the time and peak RSS of `crs ingest` (run as a child process so its peak memory is its own)
next to the plain I/O of the same file measured in the same run: a multi-threaded
`pyarrow.csv.read_csv` + `pyarrow.parquet.write_table`, each in a fresh interpreter (imports included).
The two alternate, `--repeats` times each; medians and their ratio are printed (the machine is shared,
so single runs are noisy). The issue-14 target is a ratio of at most 2. ``--chunk-rows N`` adds a third
child per repeat: the same ingest with measurements validated in blocks of about N rows (``chunk_rows``),
to compare time and peak memory with the whole table at once.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

WORK = Path(__file__).resolve().parent / "_work" / "ingest"
# (name as written, unit, typical level, log-scale spread)
ANALYTES = [("CRP", "mg/L", 5.0, 0.8), ("Ferritin", "ng/mL", 800.0, 0.6), ("IL-6", "pg/mL", 20.0, 1.0),
            ("IFNG", "pg/mL", 10.0, 1.0), ("LDH", "U/L", 250.0, 0.4), ("PLT", "10^9/L", 150.0, 0.4),
            ("CREAT", "mg/dL", 0.9, 0.3), ("TEMP", "C", 37.0, 0.02)]


def make_cohort(directory: Path, n_rows: int, n_patients: int, seed: int = 0) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ids = np.array([f"P{i:06d}" for i in range(n_patients)])
    anchor = np.datetime64("2024-01-01T08:00:00") + (rng.integers(0, 365 * 24, n_patients) * 3600).astype("timedelta64[s]")
    pd.DataFrame({"patient_id": ids, "anchor_time": np.datetime_as_string(anchor, unit="s"),
                  "age": rng.integers(20, 85, n_patients)}).to_csv(directory / "patients.csv", index=False)
    patient = rng.integers(0, n_patients, n_rows)
    analyte = rng.integers(0, len(ANALYTES), n_rows)
    # Unique seconds per row so no accidental same-time conflicts.
    offset_s = rng.permutation(n_rows).astype(np.int64) % (35 * 24 * 3600) - 7 * 24 * 3600
    stamps = anchor[patient] + offset_s.astype("timedelta64[s]")
    spread = np.array([a[3] for a in ANALYTES])[analyte]
    level = np.array([a[2] for a in ANALYTES])[analyte] * np.exp(rng.normal(0, 1, n_rows) * spread)
    values = np.char.mod("%.4g", level).astype(object)
    censored = (rng.random(n_rows) < 0.05) & np.isin(analyte, [2, 3])  # cytokines below the assay limit
    values[censored] = "<1.5"
    bad = rng.random(n_rows) < 0.001
    values[bad] = "hemolyzed"
    frame = pd.DataFrame({
        "patient_id": ids[patient], "time": np.datetime_as_string(stamps, unit="s"),
        "analyte": np.array([a[0] for a in ANALYTES])[analyte], "value": values,
        "unit": np.array([a[1] for a in ANALYTES])[analyte],
    })
    frame.to_csv(directory / "measurements.csv", index=False)
    pd.DataFrame({"patient_id": ids[:100], "event": "CRS", "grade": 2, "time": np.datetime_as_string(anchor[:100] + np.timedelta64(30, "h"), unit="s")}).to_csv(directory / "events.csv", index=False)


def timed_child(code: str) -> tuple[float, float, float]:
    """Wall time of a fresh interpreter running ``code`` (imports included), its own peak RSS (MB) and
    its CPU time (user + system, all threads: steadier than wall time on a shared machine)."""
    # VmHWM (this process image's peak), not ru_maxrss, which Linux carries over exec from the parent.
    report = ("; import sys; print([line.split()[1] for line in open('/proc/self/status') "
              "if line.startswith('VmHWM')][0], file=sys.stderr)")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code + report], check=True, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    peak_mb = int(proc.stderr.strip().splitlines()[-1]) / 1024
    return seconds, peak_mb, cpu


def _plain_code(cohort: Path) -> str:
    return (f"import pyarrow.csv as pacsv, pyarrow.parquet as pq; "
            f"pq.write_table(pacsv.read_csv({str(cohort / 'measurements.csv')!r}, "
            f"read_options=pacsv.ReadOptions(use_threads=True)), {str(WORK / 'plain.parquet')!r})")


def _ingest_code(cohort: Path, chunk_rows: int | None = None) -> str:
    return (f"from pathlib import Path; from pipeline.config import Config; from pipeline.ingest import main; "
            f"main(Config(), cohort=Path({str(cohort)!r}), out=Path({str(WORK / 'interim')!r}), "
            f"report=Path({str(WORK / 'ingest.json')!r}), chunk_rows={chunk_rows!r})")


def _summary(label: str, runs: list[tuple[float, float, float]]) -> tuple[float, float]:
    wall, peak, cpu = np.median([r[0] for r in runs]), max(r[1] for r in runs), np.median([r[2] for r in runs])
    print(f"{label}: median {wall:.2f} s (cpu {cpu:.2f} s), peak RSS {peak:.0f} MB")
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--patients", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk-rows", type=int, default=None, help="also time ingest in blocks of this many rows")
    args = parser.parse_args()
    cohort = WORK / f"cohort_{args.rows}"
    if not (cohort / "measurements.csv").exists():
        print(f"generating {args.rows:,} rows ...", flush=True)
        make_cohort(cohort, args.rows, args.patients)
    size_mb = (cohort / "measurements.csv").stat().st_size / 1e6
    print(f"measurements.csv: {args.rows:,} rows, {size_mb:.0f} MB")
    runs: dict[str, list[tuple[float, float, float]]] = {"plain": [], "ingest": [], "chunked": []}
    for i in range(args.repeats):
        runs["plain"].append(timed_child(_plain_code(cohort)))
        runs["ingest"].append(timed_child(_ingest_code(cohort)))
        (pw, _, pc), (iw, _, ic) = runs["plain"][-1], runs["ingest"][-1]
        line = f"run {i + 1}: plain {pw:.2f} s (cpu {pc:.2f} s), ingest {iw:.2f} s (cpu {ic:.2f} s), ratio {iw / pw:.2f}"
        if args.chunk_rows:
            runs["chunked"].append(timed_child(_ingest_code(cohort, args.chunk_rows)))
            line += f"; chunked {runs['chunked'][-1][0]:.2f} s, {runs['chunked'][-1][1]:.0f} MB"
        print(line, flush=True)
    plain, plain_cpu = _summary("plain pyarrow read_csv + write_table (multi-threaded)", runs["plain"])
    ingest, ingest_cpu = _summary("crs ingest (read, validate, normalise, write)", runs["ingest"])
    if args.chunk_rows:
        _summary(f"crs ingest, chunk_rows {args.chunk_rows:,}", runs["chunked"])
    print(f"ratio ingest / plain I/O: {ingest / plain:.2f} wall, {ingest_cpu / plain_cpu:.2f} cpu "
          f"(medians of {args.repeats} alternating runs; target <= 2)")


if __name__ == "__main__":
    main()
