"""Real-data benchmark: the whole pipeline on a real cohort with only the three user keys set.

Runs ingest -> featurize -> train -> evaluate (the stages' own ``main``) on a cohort directory in the
canonical format, with params = defaults + ``cohort.path``, ``targets``, ``landmarks_hours`` and
``static_features`` only, everything written to a temporary folder (nothing in the repository, MLflow in
the temporary folder too). Prints, per landmark, the model's out-of-fold AUROC next to the
simple-summaries reference's (the 60-line XGBoost on last/first/max/log(last/first) per analyte, same
rows and folds), the paired difference with its patient-bootstrap CI, and the calibration slope.

Default: ``../shared/cohorts/covid_tongji`` (361 COVID-19 patients; see its README) with its README's
keys. Skipped (exit 0, one line) when the cohort folder is absent, so the project never needs it.

    .venv/bin/python benchmarks/bench_real_cohort.py
    .venv/bin/python benchmarks/bench_real_cohort.py --cohort DIR --target crs_severe=CRS:3 \
        --target icans_severe=ICANS:3 --landmarks 0,24,48 --static age,sex [--grades derive] \
        [--drop-features 'grade__|vasopressors__|hypotension__|hypoxia__']

``--drop-features REGEX`` removes the matching feature columns between featurize and train (an ablation:
e.g. the grade-at-landmark features); ``--grades`` sets ``cohort.grades``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
COVID = ROOT.parent / "shared" / "cohorts" / "covid_tongji"


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cohort", type=Path, default=COVID)
    parser.add_argument("--target", action="append", help="name=EVENT:MIN_GRADE (repeatable; default death=DEATH:5)")
    parser.add_argument("--landmarks", default="24,48,72", help="hours, comma-separated")
    parser.add_argument("--static", default="age,sex", help="patients-table columns, comma-separated")
    parser.add_argument("--grades", default="given", choices=["given", "derive", "compare"], help="cohort.grades")
    parser.add_argument("--drop-features", default=None, help="regex of feature columns to drop before train")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a params key (YAML value), e.g. train.colsample_bytree=0.5 (repeatable)")
    args = parser.parse_args()
    args.target = args.target or ["death=DEATH:5"]
    return args


def _config(args: argparse.Namespace, work: Path):
    from pipeline.config import parse_config

    targets = {}
    for target in args.target:
        name, definition = target.split("=")
        event, grade = definition.split(":")
        targets[name] = {"event": event, "min_grade": int(grade)}
    import yaml

    overrides: dict = {}
    for item in args.set:
        key, value = item.split("=", 1)
        section, name = key.split(".", 1)
        overrides.setdefault(section, {})[name] = yaml.safe_load(value)
    config = parse_config({
        **overrides,
        "cohort": {"path": str(args.cohort), "grades": args.grades, **overrides.get("cohort", {})},
        "targets": targets,
        "landmarks_hours": [float(h) for h in args.landmarks.split(",")],
        "static_features": [c for c in args.static.split(",") if c],
    })
    moved = {key: work / Path(value) for key, value in config.paths.model_dump().items()}
    return config.model_copy(update={"paths": config.paths.model_copy(update=moved)})


def _drop_features(config, pattern: str) -> None:
    import re

    import pandas as pd

    frame = pd.read_parquet(config.paths.landmarks)
    dropped = [c for c in frame.columns if re.search(pattern, c)]
    print(f"dropped {len(dropped)} feature columns: {', '.join(dropped)}")
    frame.drop(columns=dropped).to_parquet(config.paths.landmarks, index=False)


def _run_stages(config, drop_features: str | None = None) -> dict[str, float]:
    from pipeline import evaluate, featurize, grade, ingest, train

    seconds = {}
    for name, stage in (("ingest", ingest), ("grade", grade), ("featurize", featurize), ("train", train),
                        ("evaluate", evaluate)):
        started = time.perf_counter()
        stage.main(config)
        seconds[name] = time.perf_counter() - started
        if name == "featurize" and drop_features:
            _drop_features(config, drop_features)
    return seconds


def _fmt(value) -> str:
    return "   n/a" if value is None else f"{value:6.3f}"


def _report(config, seconds: dict[str, float]) -> None:
    import json

    metrics = json.loads(Path(config.paths.metrics).read_text())
    for target, per_landmark in metrics.items():
        print(f"\n{target}: landmark  n  events | model AUROC | simple-summaries AUROC | model - simple (95% CI) | cal. slope")
        for key, block in per_landmark.items():
            if not isinstance(block, dict) or "model" not in block:
                continue
            model, simple = block["model"], block.get("baselines", {}).get("simple_summaries", {})
            diff = simple.get("auroc_difference") or {}
            ci = diff.get("ci") or [None, None]
            print(f"  {key:>6} {block['n']:5d} {block['events']:5d} | {_fmt(model.get('auroc'))} | "
                  f"{_fmt(simple.get('auroc'))} | {_fmt(diff.get('estimate'))} ({_fmt(ci[0])}, {_fmt(ci[1])}) | "
                  f"{_fmt(model.get('calibration_slope'))}")
    print("\nseconds: " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items()))


def main() -> None:
    args = _args()
    if not args.cohort.is_dir():
        print(f"bench_real_cohort: {args.cohort} not found; skipped")
        return
    with tempfile.TemporaryDirectory(prefix="crs-real-") as tmp:
        work = Path(tmp)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
        os.chdir(work)  # MLflow's default artifact folder is relative to the working directory
        config = _config(args, work)
        _report(config, _run_stages(config, args.drop_features))


if __name__ == "__main__":
    main()
