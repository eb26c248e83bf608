"""Benchmark ``crs predict --no-pages`` on a large cohort of one-row patients (issue 14: bounded memory).

Builds (once, cached under ``benchmarks/_work/predict_scale/``) a cohort of N patients with one
measurement each, sampled from the simulated cohort: each new patient is a copy of the patients row of
the source patient of one sampled measurement row (so its ``anchor_time`` fits the timestamp). Then
runs ``crs predict COHORT --out OUT --no-pages [--chunk-size C]`` as a child process and prints its wall
time and peak RSS (``os.wait4``: the child's own ``ru_maxrss``). Target: 1,000,000 patients in at most
120 s and 3 GB.

Needs ``models/`` and ``data/raw/synthetic/`` (``make run``).

    .venv/bin/python benchmarks/bench_predict_scale.py [--patients 1000000] [--chunk-size 50000 ...]
        [--model models] [--repeats 1]

``--chunk-size`` may be given several times (e.g. ``--chunk-size 1000000000`` for one chunk: the
unchunked path) to compare in the same run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks/_work/predict_scale"
SECONDS_TARGET = 120.0
RSS_TARGET_GB = 3.0


def _read_text(path: Path) -> pa.Table:
    """A CSV with every column as text (cells unchanged)."""
    names = pacsv.read_csv(path, read_options=pacsv.ReadOptions(skip_rows_after_names=10**9)).schema.names
    return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.string())))


def build_cohort(n_patients: int, seed: int = 0) -> Path:
    """N one-row patients sampled from the simulated cohort (cached by size)."""
    out = WORK / f"cohort_{n_patients}"
    if (out / "measurements.csv").exists():
        return out
    source = ROOT / "data/raw/synthetic"
    patients, measurements = _read_text(source / "patients.csv"), _read_text(source / "measurements.csv")
    # Rows of patients in the patients table only (the simulator also writes a few orphans to quarantine).
    patient_rows = pc.index_in(measurements["patient_id"], value_set=patients["patient_id"]).to_numpy(
        zero_copy_only=False)
    known = np.flatnonzero(~np.isnan(patient_rows.astype(float)))
    rows = np.random.default_rng(seed).choice(known, n_patients)
    sampled = measurements.take(pa.array(rows))
    patient_rows = patient_rows[rows].astype(np.int64)
    width = len(str(n_patients))
    new_ids = pa.array(np.char.add("N", np.char.zfill(np.arange(1, n_patients + 1).astype(str), width)))
    new_patients = patients.take(pa.array(patient_rows)).set_column(0, "patient_id", new_ids)
    new_measurements = sampled.set_column(0, "patient_id", new_ids)
    tmp = out.with_name(out.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    pacsv.write_csv(new_patients, tmp / "patients.csv")
    pacsv.write_csv(new_measurements, tmp / "measurements.csv")
    tmp.rename(out)
    return out


def run_predict(cohort: Path, model: str, chunk_size: int | None) -> dict[str, float]:
    """``crs predict --no-pages`` as a child process: wall seconds and the child's peak RSS."""
    out = WORK / "out"
    crs = Path(sys.executable).with_name("crs")
    command = [str(crs), "predict", str(cohort), "--model", model, "--out", str(out), "--no-pages"]
    if chunk_size is not None:
        command += ["--chunk-size", str(chunk_size)]
    started = time.perf_counter()
    child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    stdout, stderr = child.stdout.read(), child.stderr.read()  # type: ignore[union-attr]
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"crs predict failed ({child.returncode}): {stderr.strip()[-2000:]}")
    print("  " + stdout.strip().splitlines()[0])
    return {"seconds": seconds, "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "peak_rss_gb": usage.ru_maxrss * 1024 / 1e9}  # Linux: ru_maxrss in KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=1_000_000)
    parser.add_argument("--chunk-size", type=int, action="append", default=None,
                        help="rows of patients per chunk (repeatable); default: predict's own default")
    parser.add_argument("--model", default="models")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()

    started = time.perf_counter()
    cohort = build_cohort(args.patients)
    print(f"cohort: {args.patients:,} one-row patients in {cohort} ({time.perf_counter() - started:.1f} s)")
    for chunk_size in args.chunk_size or [None]:
        for _ in range(args.repeats):
            got = run_predict(cohort, args.model, chunk_size)
            ok = got["seconds"] <= SECONDS_TARGET and got["peak_rss_gb"] <= RSS_TARGET_GB
            label = "default" if chunk_size is None else f"{chunk_size:,}"
            print(f"crs predict --no-pages, {args.patients:,} patients, chunk size {label}: "
                  f"{got['seconds']:.1f} s ({got['cpu_seconds']:.1f} CPU-s), peak RSS {got['peak_rss_gb']:.2f} GB; "
                  f"target <= {SECONDS_TARGET:g} s and {RSS_TARGET_GB:g} GB: {'OK' if ok else 'OVER'}")


if __name__ == "__main__":
    main()
