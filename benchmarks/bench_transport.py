"""Transport benchmark: a model trained on one simulated cohort, validated on another with other sites
and another product mix (issue 15's sim-to-sim check; no real CAR-T cohort is needed or used).

Uses a trained ``models/`` directory (default: the one ``make run`` wrote) and simulates a new cohort
with another seed, keeps only the patients of the chosen sites and products (a different case mix
than training's), and runs ``crs validate --recalibrate`` on it. Prints per target and landmark the
external AUROC (95% CI), calibration-in-the-large and slope next to the model's own cross-validation,
the recalibration's cross-validated effect, the first drift flags, and the time ``crs validate`` took.

    .venv/bin/python benchmarks/bench_transport.py
    .venv/bin/python benchmarks/bench_transport.py --sites SITE05,SITE06 --products axi-cel,brexu-cel
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    parser.add_argument("--seed", type=int, default=2027)
    parser.add_argument("--n-simulated", type=int, default=4000, help="patients simulated before the subset")
    parser.add_argument("--sites", default="SITE04,SITE05,SITE06")
    parser.add_argument("--products", default="axi-cel,brexu-cel,tisa-cel,cilta-cel")
    return parser.parse_args()


def _subset(cohort: Path, out: Path, sites: list[str], products: list[str]) -> int:
    """Copy ``cohort`` keeping the patients of ``sites`` and ``products`` (every table filtered by id)."""
    out.mkdir(parents=True)
    patients = pd.read_csv(cohort / "patients.csv", dtype=str, keep_default_na=False)
    keep = patients[patients["site"].isin(sites) & patients["product"].isin(products)]
    ids = set(keep["patient_id"])
    keep.to_csv(out / "patients.csv", index=False)
    for path in cohort.glob("*.csv"):
        if path.name != "patients.csv":
            table = pd.read_csv(path, dtype=str, keep_default_na=False)
            table[table["patient_id"].isin(ids)].to_csv(out / path.name, index=False)
    return len(keep)


def _print(validation: dict, seconds: float) -> None:
    print("| target | landmark | n (events) | AUROC (95% CI) | training CV AUROC | CITL | slope | "
          "training CV slope |")
    print("|---|---|---|---|---|---|---|---|")
    for target, entry in validation["targets"].items():
        for key, f in entry["landmarks"].items():
            cv = f.get("training_cv") or {}
            ci = f["auroc_ci"]
            print(f"| {target} | {key} h | {f['n']} ({f['n_events']}) | {f['auroc']} ({ci[0]}-{ci[1]}) | "
                  f"{cv.get('auroc')} | {f['calibration_intercept']} | {f['calibration_slope']} | "
                  f"{cv.get('calibration_slope')} |")
    for target, r in (validation.get("recalibration") or {}).items():
        if "intercept" in r:
            print(f"recalibration {target}: intercept {r['intercept']:+.3f}; CITL before "
                  f"{r['before']['calibration_intercept']}, after (cross-validated) "
                  f"{r['after_cross_validated']['calibration_intercept']}")
    for line in (validation.get("drift") or {}).get("summary", [])[:6]:
        print(f"drift: {line}")
    print(f"crs validate: {validation['cohort']['n_patients']} patients in {seconds:.1f} s (with HTML report)")


def main() -> None:
    args = _args()
    from pipeline import simulate, validate
    from pipeline.config import load_config

    config = load_config(ROOT / "params.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        full, cohort = Path(tmp) / "full", Path(tmp) / "cohort"
        simulate.main(config, out=full, n_patients=args.n_simulated, seed=args.seed)
        n = _subset(full, cohort, args.sites.split(","), args.products.split(","))
        print(f"transport cohort: {n} patients (sites {args.sites}; products {args.products}; seed {args.seed})")
        started = time.perf_counter()
        output = validate.main(config, cohort, args.models, Path(tmp) / "out", with_recalibration=True)
        _print(output.validation, time.perf_counter() - started)


if __name__ == "__main__":
    main()
