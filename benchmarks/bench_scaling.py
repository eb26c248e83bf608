"""Scaling curves: wall time and peak memory of every stage at 1k, 10k, 100k patients (issue 14).

For each cohort size (simulated, same sampling density per patient) the real commands run one after
another, each in its own child process so its peak RSS is its own: ``crs simulate``, ``crs ingest``, ``crs grade``,
``crs featurize``, ``crs train`` (fast parameters, sizes up to ``--train-max`` only) and ``crs predict
--no-pages``. Next to them, plain baselines measured in the same run on the same files:

- ingest: pyarrow's multi-threaded CSV read of ``measurements.csv`` plus a Parquet write;
- featurize: a plain pandas groupby (last, first and max per patient x analyte at each landmark);
- tsfresh ``MinimalFCParameters`` on a 1,000-patient sample (per patient x analyte at each landmark),
  when tsfresh is installed (``pip install .[bench]``); otherwise one line says so and the row is skipped.

Everything is written under ``benchmarks/_work/scaling``; the table goes to ``docs/performance.md``
(between its ``bench_scaling`` markers; the rest of that file is kept) with the machine, the date, the
load averages and the exact command.

    .venv/bin/python benchmarks/bench_scaling.py [--sizes 1000,10000,100000] [--quick] [--train-max 10000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "_work" / "scaling"
DOC = ROOT / "docs" / "performance.md"
BEGIN, END = "<!-- bench_scaling:begin -->", "<!-- bench_scaling:end -->"
#: Train without the nested search, one CV repeat and no bootstrap: the procedure's cost per patient
#: without the search budget (the default parameters take 33 s at 1,000 patients, see the README).
FAST_TRAIN = {"tune": False, "n_repeats": 1, "n_bootstrap": 0}
# The simulated cohort's bedside charts make measurements.csv about 35 MB per 1,000 patients: at 100,000
# patients it passes the default one-file limits (2 GB, 50 M rows), which guard against mistakes, not scale.
BENCH_INGEST_LIMITS = {"max_file_mb": 65536, "max_rows": 1_000_000_000}
TSFRESH_PATIENTS = 1000


@dataclass
class Measure:
    """One child process: wall seconds, peak RSS (MB, largest process of its tree) and 1-min load."""

    seconds: float
    peak_mb: float
    load: float
    note: str = ""


def run_child(cmd: list[str], log: Path, cwd: Path, env: dict[str, str] | None = None) -> Measure:
    """Run ``cmd``; wall time and ``ru_maxrss`` from ``wait4`` of this very child (not of earlier ones)."""
    load = os.getloadavg()[0]
    with log.open("w") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    measure = Measure(seconds, usage.ru_maxrss / 1024, load)  # Linux: ru_maxrss in KiB
    if proc.returncode != 0:  # recorded in the table, and the other steps still run
        print(f"failed ({proc.returncode}): {shlex.join(cmd)}\n{log.read_text()[-2000:]}", flush=True)
        measure.note = f"FAILED (exit {proc.returncode}; {log.name})"
    return measure


def python_child(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", code, *args]


BASELINE_INGEST = """
import sys, pyarrow.csv as csv, pyarrow.parquet as pq
table = csv.read_csv(sys.argv[1])
pq.write_table(table, sys.argv[2])
print(table.num_rows)
"""

BASELINE_FEATURIZE = """
import sys, pandas as pd
m = pd.read_parquet(sys.argv[1], columns=["patient_id", "hours_since_anchor", "analyte", "value"])
m = m.sort_values(["patient_id", "hours_since_anchor"], kind="stable")
parts = []
for landmark in (0.0, 24.0, 48.0, 72.0):
    cut = m[m["hours_since_anchor"] <= landmark]
    agg = cut.groupby(["patient_id", "analyte"], sort=False, observed=True)["value"].agg(["last", "first", "max"])
    wide = agg.unstack("analyte")
    wide.columns = [f"{analyte}__{stat}" for stat, analyte in wide.columns]
    parts.append(wide.assign(landmark_hours=landmark))
pd.concat(parts).to_parquet(sys.argv[2])
"""

TSFRESH = """
import sys, time, pandas as pd
from tsfresh import extract_features
from tsfresh.feature_extraction import MinimalFCParameters
m = pd.read_parquet(sys.argv[1], columns=["patient_id", "hours_since_anchor", "analyte", "value"])
ids = sorted(m["patient_id"].unique())[: int(sys.argv[3])]
m = m[m["patient_id"].isin(ids)]
parts = []
for landmark in (0.0, 24.0, 48.0, 72.0):
    cut = m[m["hours_since_anchor"] <= landmark]
    features = extract_features(cut, column_id="patient_id", column_sort="hours_since_anchor",
                                column_kind="analyte", column_value="value",
                                default_fc_parameters=MinimalFCParameters(), n_jobs=0,
                                disable_progressbar=True)
    parts.append(features.assign(landmark_hours=landmark))
pd.concat(parts).to_parquet(sys.argv[2])
print(len(ids))
"""


def size_params(directory: Path) -> Path:
    """The repository's params.yaml with every path under ``directory`` and the fast train settings."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["paths"] = {key: str(directory / Path(value)) for key, value in raw["paths"].items()}
    raw["cohort"]["path"] = str(directory / "cohort")
    raw["train"].update(FAST_TRAIN)
    raw["ingest"].update(BENCH_INGEST_LIMITS)
    path = directory / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def crs(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli", *args]


def stage_commands(n: int, d: Path, params: Path, model_dir: Path | None) -> dict[str, list[str]]:
    """The real commands of one cohort size (train and predict only where a model can be had)."""
    p = str(params)
    commands = {
        "simulate": crs("simulate", "-p", p, "--out", str(d / "cohort"), "--n-patients", str(n)),
        "ingest": crs("ingest", "-p", p, "--cohort", str(d / "cohort"), "--out", str(d / "data/interim"),
                      "--report", str(d / "reports/ingest.json")),
        "grade": crs("grade", "-p", p),
        "featurize": crs("featurize", "-p", p),
        "train": crs("train", "-p", p),
        "predict": crs("predict", str(d / "cohort"), "--out", str(d / "predict"), "-p", p, "--no-pages",
                       "--model", str(model_dir or d / "models")),
    }
    return commands


def measure_size(n: int, train_max: int, trained: dict[int, Path]) -> dict[str, Measure]:
    """Every stage and baseline at ``n`` patients, in pipeline order (the baselines after their stage)."""
    d = WORK / str(n)
    shutil.rmtree(d, ignore_errors=True)
    (d / "logs").mkdir(parents=True)
    params = size_params(d)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{d / 'mlflow.db'}", "PYTHONPATH": str(ROOT)}
    do_train = n <= train_max
    model_from = None if do_train or not trained else max(trained.items())
    commands = stage_commands(n, d, params, None if model_from is None else model_from[1])
    interim = d / "data/interim/measurements.parquet"
    steps: list[tuple[str, list[str]]] = [
        ("simulate", commands["simulate"]),
        ("ingest", commands["ingest"]),
        ("baseline_ingest", python_child(BASELINE_INGEST, str(d / "cohort/measurements.csv"),
                                         str(d / "baseline_measurements.parquet"))),
        ("grade", commands["grade"]),
        ("featurize", commands["featurize"]),
        ("baseline_featurize", python_child(BASELINE_FEATURIZE, str(interim), str(d / "baseline_features.parquet"))),
    ]
    if do_train:
        steps.append(("train", commands["train"]))
    if do_train or model_from is not None:
        steps.append(("predict", commands["predict"]))
    out: dict[str, Measure] = {}
    for name, cmd in steps:
        out[name] = run_child(cmd, d / "logs" / f"{name}.log", d, env)
        print(f"  {n:>7,} {name:<20} {out[name].seconds:8.1f} s {out[name].peak_mb:8.0f} MB"
              f"  (load {out[name].load:.2f})", flush=True)
    if do_train and not out["train"].note:
        trained[n] = d / "models"
    elif model_from is not None:
        out["predict"].note = f"model trained on {model_from[0]:,}"
    return out


def measurement_rows(directory: Path) -> str:
    """Measurement rows read by ingest (``reports/ingest.json``); "-" when ingest wrote none."""
    path = directory / "reports/ingest.json"
    if not path.exists():
        return "-"
    return f'{int(json.loads(path.read_text())["files"]["measurements"]["rows_read"]):,}'


def measure_tsfresh(n_source: int) -> Measure | None:
    """tsfresh minimal features on the first 1,000 patients of the ``n_source`` cohort (None: absent)."""
    d = WORK / str(n_source)
    # A relative PYTHONPATH (e.g. a --target install of the extra) made absolute: the child runs in ``d``.
    paths = [str(Path(p).resolve()) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    check = subprocess.run([sys.executable, "-c", "import tsfresh"], capture_output=True, cwd=d, env=env)
    if check.returncode != 0:
        print("tsfresh not installed: `pip install .[bench]`")
        return None
    m = run_child(python_child(TSFRESH, str(d / "data/interim/measurements.parquet"), str(d / "tsfresh.parquet"),
                               str(TSFRESH_PATIENTS)), d / "logs" / "tsfresh.log", d, env)
    print(f"  tsfresh minimal ({TSFRESH_PATIENTS:,} patients x 4 landmarks) {m.seconds:.1f} s {m.peak_mb:.0f} MB"
          f"  (load {m.load:.2f})", flush=True)
    return m


ROWS = [  # (key, label)
    ("simulate", "`crs simulate`"),
    ("ingest", "`crs ingest`"),
    ("baseline_ingest", "baseline: pyarrow CSV read + Parquet write of measurements.csv"),
    ("grade", "`crs grade` (ASTCT grades from the bedside observations)"),
    ("featurize", "`crs featurize` (4 landmarks; read, features, labels, write)"),
    ("baseline_featurize", "baseline: pandas groupby last/first/max per patient x analyte x landmark"),
    ("tsfresh", f"baseline: tsfresh MinimalFCParameters, {TSFRESH_PATIENTS:,}-patient sample, 4 landmarks"),
    ("train", "`crs train` (tune: false, n_repeats: 1, n_bootstrap: 0)"),
    ("predict", "`crs predict --no-pages` (every patient of the cohort)"),
]


def cell(m: Measure | None, missing: str) -> str:
    if m is None:
        return missing
    note = f" ({m.note})" if m.note else ""
    return f"{m.seconds:.1f} s, {m.peak_mb:,.0f} MB{note}"


def table(results: dict[int, dict[str, Measure]], train_max: int) -> list[str]:
    sizes = sorted(results)
    lines = ["| step | " + " | ".join(f"{n:,} patients" for n in sizes) + " |",
             "|---|" + "---|" * len(sizes),
             "| measurement rows (CSV) | " + " | ".join(measurement_rows(WORK / str(n)) for n in sizes) + " |"]
    for key, label in ROWS:
        if all(key not in results[n] for n in sizes):
            continue
        missing = f"not run (train cap {train_max:,})" if key == "train" else "-"
        lines.append(f"| {label} | " + " | ".join(cell(results[n].get(key), missing) for n in sizes) + " |")
    for key, base in (("ingest", "baseline_ingest"), ("featurize", "baseline_featurize")):
        ratios = ["-" if results[n][key].note or results[n][base].note else
                  f"{results[n][key].seconds / results[n][base].seconds:.1f}x" for n in sizes]
        lines.append(f"| {key} time / its baseline | " + " | ".join(ratios) + " |")
    loads = [f"{min(m.load for m in results[n].values()):.2f}-"
             f"{max(m.load for m in results[n].values()):.2f}" for n in sizes]
    lines.append("| 1-min load average at the start of each step | " + " | ".join(loads) + " |")
    return lines


def machine() -> list[str]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown")
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                            capture_output=True, text=True)
    dirty = len(status.stdout.splitlines())
    state = f" plus uncommitted changes in {dirty} tracked files" if dirty else ""
    return [f"- machine: {os.cpu_count()} cores, {mem_kb / 1024**2:.1f} GB RAM, {cpu}; Linux {platform.release()}",
            f"- Python {platform.python_version()}; repository at commit {commit.stdout.strip() or 'unknown'}{state}"]


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def markdown(results: dict[int, dict[str, Measure]], train_max: int, meta: dict[str, str]) -> str:
    lines = [BEGIN, f"## Scaling curves ({meta['date']})", "",
             f"Command: `{meta['command']}`", "", *machine(),
             f"- `uptime` before: `{meta['uptime_before']}`", f"- `uptime` after: `{meta['uptime_after']}`", "",
             "Each cell: wall time of the whole child process (start-up, reading and writing included) and its "
             "peak RSS (`ru_maxrss` from `wait4` of that child: the largest single process of its tree, not "
             "the sum of worker processes).", "", *table(results, train_max), "",
             f"- Train runs only up to {train_max:,} patients (`--train-max`), with the fast parameters above "
             "(the default nested search would dominate the run); predict at larger sizes uses the model "
             "trained at the largest trained size, on every patient of the larger cohort.",
             "- Simulated cohorts (`crs simulate`, data-quality faults on), the same sampling density per "
             "patient at every size; all files under `benchmarks/_work/scaling/`.",
             "- Other work (other sessions' tests and benchmarks) ran on these 2 cores at the same time; the "
             "load averages above say how much.", END]
    return "\n".join(lines) + "\n"


def write_doc(text: str, path: Path = DOC) -> None:
    """Replace the marked block of ``path`` (or append it; the rest of the file is kept)."""
    old = path.read_text() if path.exists() else "# Performance\n\n"
    if BEGIN in old and END in old:
        head, rest = old.split(BEGIN, 1)
        new = head + text.rstrip("\n") + rest.split(END, 1)[1]
    else:
        new = old.rstrip("\n") + "\n\n" + text
    path.write_text(new)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="comma-separated cohort sizes")
    parser.add_argument("--quick", action="store_true", help="1,000 and 10,000 patients only")
    parser.add_argument("--train-max", type=int, default=10_000, help="largest size that trains a model")
    parser.add_argument("--no-doc", action="store_true", help=f"print only; leave {DOC.relative_to(ROOT)} alone")
    args = parser.parse_args()
    sizes = [1000, 10_000] if args.quick else sorted(int(s.replace("_", "")) for s in args.sizes.split(","))
    meta = {"date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), "uptime_before": uptime(),
            "command": shlex.join([".venv/bin/python", "benchmarks/bench_scaling.py", *sys.argv[1:]])}
    if os.environ.get("PYTHONPATH"):  # e.g. where the bench extra was installed with --target
        meta["command"] = f"PYTHONPATH={os.environ['PYTHONPATH']} {meta['command']}"
    print(f"scaling curves for {', '.join(f'{n:,}' for n in sizes)} patients; {meta['uptime_before']}")
    results: dict[int, dict[str, Measure]] = {}
    trained: dict[int, Path] = {}
    for n in sizes:
        results[n] = measure_size(n, args.train_max, trained)
        if n == sizes[0]:
            ts = measure_tsfresh(n)
            if ts is not None:
                results[n]["tsfresh"] = ts
    meta["uptime_after"] = uptime()
    text = markdown(results, args.train_max, meta)
    print("\n".join(table(results, args.train_max)))
    if not args.no_doc:
        write_doc(text)
        print(f"written to {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
