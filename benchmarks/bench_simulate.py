"""Benchmark: `crs simulate` with 20,000 patients (target <= 20 s on the 2-core reference machine).

Usage: .venv/bin/python benchmarks/bench_simulate.py [--patients 20000] [--seed 20261121] [--repeat 1]

Runs the real command in a child process (imports, calibration and CSV writing included) so the wall
time is what a user waits and the peak RSS is the command's own. Output goes to benchmarks/_work/.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "benchmarks" / "_work" / "simulate"
TARGET_SECONDS = 20.0


def run_once(n_patients: int, seed: int) -> float:
    """Wall seconds of one `crs simulate` child process."""
    cmd = [sys.executable, "-m", "pipeline.cli", "simulate", "--out", str(WORK),
           "--n-patients", str(n_patients), "--seed", str(seed)]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=20261121)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()

    seconds = [run_once(args.patients, args.seed) for _ in range(args.repeat)]
    # ru_maxrss of children is the largest peak among them (kilobytes on Linux).
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    size_mib = sum(p.stat().st_size for p in WORK.iterdir()) / 2**20
    rows = sum(1 for _ in (WORK / "measurements.csv").open("rb")) - 1
    best = min(seconds)
    print(f"crs simulate --n-patients {args.patients}: {best:.1f} s wall (runs: "
          f"{', '.join(f'{s:.1f}' for s in seconds)}), peak RSS {peak_mib:.0f} MiB, "
          f"{rows} measurement rows, {size_mib:.0f} MiB written")
    print(f"target <= {TARGET_SECONDS:.0f} s: {'OK' if best <= TARGET_SECONDS else 'TOO SLOW'}")


if __name__ == "__main__":
    main()
