"""Benchmark scoring new patients (issue 6 performance targets).

1. Python API, one patient, warm: ``Scorer("models").score_patient(...)`` = ingest rules + featurize at the
   latest landmark + both targets' calibrated risk + exact SHAP top drivers. Targets (issue 14): median
   <= 20 ms and p99 <= 40 ms (wall clock; the process CPU time per call is printed beside it, since the
   machine is shared and wall times are noisy).
2. ``crs predict`` on the 1,000-patient simulated cohort including explanations and HTML pages, as a
   fresh process (interpreter start and imports included). Target <= 60 s.

Needs ``make run`` first (``models/``, ``data/raw/synthetic/``, ``reports/``).

    .venv/bin/python benchmarks/bench_predict.py [--patients 50] [--repeats 5] [--model models] [--skip-cli]

``benchmarks/bench_predict_scale.py`` runs ``crs predict --no-pages`` on a million one-row patients.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LATENCY_TARGET_MS = 20.0  # median
P99_TARGET_MS = 40.0
COHORT_TARGET_S = 60.0


def bench_api(n_patients: int, repeats: int, model: Path) -> dict[str, float]:
    from pipeline.config import load_config
    from pipeline.predict import Scorer

    cohort = ROOT / "data/raw/synthetic"
    config = load_config(ROOT / "params.yaml")
    scorer = Scorer(model, config)
    measurements = pd.read_csv(cohort / "measurements.csv", dtype=str)
    patients = pd.read_csv(cohort / "patients.csv", dtype=str)
    by_patient = dict(tuple(measurements.groupby("patient_id", sort=True)))
    ids = [p for p in patients["patient_id"] if p in by_patient][:n_patients]
    rows = patients.set_index("patient_id", drop=False)
    cases = [(by_patient[p].drop(columns="patient_id"), rows.loc[p]) for p in ids]
    for m, p in cases[:3]:  # warm-up: imports, featurizer and XGBoost caches
        scorer.score_patient(m, p)
    times, cpu = [], []
    for _ in range(repeats):
        for m, p in cases:
            started, started_cpu = time.perf_counter(), time.process_time()
            scorer.score_patient(m, p)
            times.append(time.perf_counter() - started)
            cpu.append(time.process_time() - started_cpu)
    ms, cpu_ms = np.asarray(times) * 1000, np.asarray(cpu) * 1000
    rows_per_patient = np.mean([len(m) for m, _ in cases])
    return {"median_ms": float(np.median(ms)), "p99_ms": float(np.quantile(ms, 0.99)), "max_ms": float(ms.max()),
            "cpu_median_ms": float(np.median(cpu_ms)), "cpu_p99_ms": float(np.quantile(cpu_ms, 0.99)),
            "calls": len(ms), "rows_per_patient": float(rows_per_patient)}


def bench_cli() -> dict[str, float]:
    out = ROOT / "benchmarks/_work/predict_out"
    crs = Path(sys.executable).with_name("crs")
    started = time.perf_counter()
    result = subprocess.run(
        [str(crs), "predict", "data/raw/synthetic", "--model", "models", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"crs predict failed: {result.stderr.strip()}")
    print(result.stdout.strip())
    pages = len(list((out / "patients").glob("*.html")))
    n = pd.read_csv(out / "predictions.csv")["patient_id"].nunique()
    return {"seconds": seconds, "patients": float(n), "pages": float(pages)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", type=Path, default=ROOT / "models")
    parser.add_argument("--skip-cli", action="store_true")
    args = parser.parse_args()

    api = bench_api(args.patients, args.repeats, args.model)
    ok = api["median_ms"] <= LATENCY_TARGET_MS and api["p99_ms"] <= P99_TARGET_MS
    print(
        f"score_patient (both targets, SHAP drivers): median {api['median_ms']:.1f} ms, "
        f"p99 {api['p99_ms']:.1f} ms, max {api['max_ms']:.1f} ms over {api['calls']} warm calls "
        f"(CPU per call: median {api['cpu_median_ms']:.1f} ms, p99 {api['cpu_p99_ms']:.1f} ms; "
        f"~{api['rows_per_patient']:.0f} raw rows per patient); target median <= {LATENCY_TARGET_MS:g} ms and "
        f"p99 <= {P99_TARGET_MS:g} ms: {'OK' if ok else 'OVER'}"
    )
    if not args.skip_cli:
        cli = bench_cli()
        verdict = "OK" if cli["seconds"] <= COHORT_TARGET_S else "OVER"
        print(
            f"crs predict: {cli['patients']:.0f} patients, {cli['pages']:.0f} HTML files in {cli['seconds']:.1f} s "
            f"(fresh process); target <= {COHORT_TARGET_S:g} s: {verdict}"
        )


if __name__ == "__main__":
    main()
