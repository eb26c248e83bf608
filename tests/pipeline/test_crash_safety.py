"""A stage killed at any point (SIGKILL: nothing to catch) leaves the previous outputs or the new ones,
never half; its temporaries have git- and dvc-ignored names and the next run removes them; two stages
never write in one directory at once; ``crs predict --out`` never wipes what it did not write; a
killed ``train`` keeps models/ with runs.json and its MLflow run ends FAILED.

Stages run in a child process (``crs`` via :func:`pipeline.cli.main`) that can be paused just before or
after a chosen rename (``os.replace``) of an output, so the kill lands exactly in the write phase.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pathspec
import pytest
import yaml

from pipeline import ingest, io, predict, train
from pipeline.config import load_config
from pipeline.errors import UserError
from tests.conftest import write_cohort

ROOT = Path(__file__).resolve().parents[2]
INTERIM_FILES = {"patients.parquet", "measurements.parquet", "events.parquet", "treatments.parquet",
                 "observations.parquet", "quarantine.csv"}

#: Run in the child: pause (marker file, then sleep until killed) at the n-th rename touching a path.
HOOK = """
import os, sys, time
from pathlib import Path
when, nth, target = os.environ["PAUSE_WHEN"], int(os.environ["PAUSE_NTH"]), Path(os.environ["PAUSE_AT"])
real_replace, seen = os.replace, [0]
def pause():
    Path("paused").write_text(str(os.getpid()))
    time.sleep(600)
def replace(src, dst, **kw):
    hit = target in (Path(src), Path(dst))
    seen[0] += hit
    if hit and seen[0] == nth and when == "before":
        pause()
    real_replace(src, dst, **kw)
    if hit and seen[0] == nth and when == "after":
        pause()
if when == "go":  # no pause: report the start of the write phase (first temporary), slow the renames
    import tempfile
    real_mkdtemp = tempfile.mkdtemp
    def mkdtemp(*a, **kw):
        Path("go").touch()
        return real_mkdtemp(*a, **kw)
    tempfile.mkdtemp = mkdtemp
    def replace(src, dst, **kw):
        time.sleep(0.12)
        real_replace(src, dst, **kw)
os.replace = replace
sys.argv = ["crs", *sys.argv[1:]]
from pipeline.cli import main
main()
"""


def _ignored(relative: str) -> bool:
    """Ignored by both the repository's .gitignore and .dvcignore."""
    specs = [pathspec.GitIgnoreSpec.from_lines((ROOT / name).read_text().splitlines()) for name in (".gitignore", ".dvcignore")]
    return all(spec.match_file(relative) for spec in specs)


def _cohort(root: Path, n_patients: int) -> Path:
    ids = [f"P{i}" for i in range(n_patients)]
    return write_cohort(root, {
        "patients": "patient_id,age\n" + "\n".join(f"{p},{50 + i}" for i, p in enumerate(ids)),
        "measurements": "patient_id,time,analyte,value,unit\n" + "\n".join(f"{p},{h},CRP,{3 + h},mg/L" for p in ids for h in (-5, 20)),
        "events": "patient_id,event,grade,time\n" + "\n".join(f"{p},CRS,1,30" for p in ids),
    })


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A working directory with a params file whose ingest paths lie under it; cohorts v1 (2) and v2 (3 patients)."""
    _cohort(tmp_path / "v1", 2)
    _cohort(tmp_path / "v2", 3)
    params = {"cohort": {"path": str(tmp_path / "v2")},
              "paths": {"interim_dir": str(tmp_path / "data" / "interim"), "ingest_report": str(tmp_path / "reports" / "ingest.json")}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    ingest.main(load_config(tmp_path / "params.yaml"), cohort=tmp_path / "v1")  # the previous outputs
    return tmp_path


def _start(cwd: Path, args: list[str], when: str, at: Path | str = "", nth: int = 1) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PAUSE_WHEN": when, "PAUSE_AT": str(at), "PAUSE_NTH": str(nth),
           "MLFLOW_TRACKING_URI": os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{cwd / 'mlflow.db'}")}
    return subprocess.Popen([sys.executable, "-c", HOOK, *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_for(child: subprocess.Popen, marker: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        assert child.poll() is None, f"child ended before {marker.name}: {child.stderr.read()}"
        assert time.monotonic() < deadline, f"no {marker.name} within {timeout} s"
        time.sleep(0.02)


def _kill(child: subprocess.Popen) -> None:
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    child.stderr.close()


def _version(project: Path) -> int:
    """2 or 3 patients: which cohort the interim outputs (as the next stage reads them) come from;
    every file must be present and from that same cohort."""
    interim = project / "data" / "interim"
    patients = io.read_stage_parquet(interim / "patients.parquet", "patients table", "crs ingest")
    assert {p.name for p in interim.iterdir()} == INTERIM_FILES
    measurements = io.read_stage_parquet(interim / "measurements.parquet", "measurements", "crs ingest")
    assert measurements["patient_id"].nunique() == len(patients)
    report = json.loads((project / "reports" / "ingest.json").read_text())
    assert report["patients"] in (2, 3)
    return len(patients)


def _next_ingest(project: Path) -> None:
    """The next ``crs ingest``, as the CLI runs it (under the stage lock): it cleans up after a killed one."""
    with io.stage_lock(project):
        ingest.main(load_config(project / "params.yaml"))


def _leftovers(project: Path) -> list[str]:
    """Everything under ``project`` a stage may have left besides its outputs and the test's inputs."""
    expected = {"params.yaml", "v1", "v2", "data", "data/interim", "reports", "reports/ingest.json", "paused", "go"}
    found = [p.relative_to(project).as_posix() for p in project.rglob("*") if not p.is_relative_to(project / "v1")
             and not p.is_relative_to(project / "v2") and not p.is_relative_to(project / "data" / "interim")]
    return sorted(set(found) - expected)


@pytest.mark.parametrize(("when", "nth"), [("before", 1), ("after", 1), ("after", 2)],
                         ids=["new-complete-not-swapped", "between-the-two-renames", "swapped-old-not-removed"])
def test_ingest_killed_in_its_directory_swap_leaves_a_whole_output(project: Path, when: str, nth: int):
    interim = project / "data" / "interim"
    child = _start(project, ["ingest", "-p", "params.yaml"], when, interim, nth)
    _wait_for(child, project / "paused")
    _kill(child)
    left = _leftovers(project)
    assert left and all(_ignored(name) for name in left), left  # raw patient rows only under ignored names
    assert _version(project) == (3 if nth == 2 else 2)  # the new output once swapped in, else the previous one
    _next_ingest(project)
    assert _version(project) == 3 and _leftovers(project) == []


def test_ingest_killed_at_varied_times_never_leaves_half_an_output(project: Path):
    for delay in (0.05, 0.2, 0.4):
        (project / "go").unlink(missing_ok=True)
        child = _start(project, ["ingest", "-p", "params.yaml"], "go")
        _wait_for(child, project / "go")
        time.sleep(delay)
        _kill(child)
        assert _version(project) in (2, 3)
        assert all(_ignored(name) for name in _leftovers(project)), _leftovers(project)
    _next_ingest(project)
    assert _version(project) == 3 and _leftovers(project) == []


def test_two_concurrent_stages_one_fails_with_the_lock_message(project: Path):
    interim = project / "data" / "interim"
    first = _start(project, ["ingest", "-p", "params.yaml"], "before", interim)
    _wait_for(first, project / "paused")
    assert _ignored(io.LOCK_FILE) and (project / io.LOCK_FILE).exists()
    crs = [sys.executable, "-m", "pipeline.cli"]
    second = subprocess.run([*crs, "ingest", "-p", "params.yaml", "--cohort", "v1"], cwd=project,
                            capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert second.returncode == 2
    assert second.stderr.strip() == (f"error: another crs stage is running in this directory (pid {first.pid}); "
                                     "wait for it to finish or stop it, then run this command again")
    helped = subprocess.run([*crs, "train", "--help"], cwd=project, capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0  # --help needs no lock
    _kill(first)
    assert _version(project) == 2  # the first one's data was never mixed with the second's report
    ingest.main(load_config(project / "params.yaml"))  # the kernel released the killed holder's lock
    with io.stage_lock(project):
        pass
    assert not (project / io.LOCK_FILE).exists()


# --------------------------------------------------------------------------------------------
# crs predict --out
# --------------------------------------------------------------------------------------------


def _predict(config, out: Path) -> None:
    """predict.main up to where it needs a model (none here): only --out is examined."""
    predict.main(config, Path("no-cohort"), out.parent / "no-models", out, reports=False)


@pytest.mark.parametrize("layout", [
    {"predictions.csv": "a", "notes.txt": "mine"},
    {predict.OUTPUT_MARKER: "{}", "predictions.csv": "a", "thesis.docx": "mine"},
    {predict.OUTPUT_MARKER: "{}", "predictions.csv": "a", "patients/index.html": "x", "patients/notes.txt": "mine"},
    {predict.OUTPUT_MARKER: "{}", "predictions.csv": "a", "patients/data/raw.csv": "mine"},
], ids=["predictions-without-marker", "marker-and-a-user-file", "user-file-among-pages", "user-folder"])
def test_predict_refuses_a_directory_it_did_not_write_and_touches_nothing(tmp_path: Path, layout: dict[str, str]):
    out = tmp_path / "out"
    for name, text in layout.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text)
    with pytest.raises(UserError, match="not a crs predict output directory"):
        _predict(load_config(ROOT / "params.yaml"), out)
    assert {p.relative_to(out).as_posix(): p.read_text() for p in out.rglob("*") if p.is_file()} == layout


def test_predict_replaces_only_its_own_output_or_an_empty_directory(tmp_path: Path):
    config = load_config(ROOT / "params.yaml")
    (tmp_path / "a-file").write_text("mine")
    (tmp_path / "target").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "target")
    for out in (tmp_path / "a-file", tmp_path / "link"):
        with pytest.raises(UserError, match="exists and is not a directory"):
            _predict(config, out)
    own = tmp_path / "own"
    for name in (predict.OUTPUT_MARKER, "predictions.csv", "quarantine.csv", "ingest.json", "patients/index.html"):
        (own / name).parent.mkdir(parents=True, exist_ok=True)
        (own / name).write_text("x")
    (tmp_path / "empty").mkdir()
    for out in (own, tmp_path / "empty", tmp_path / "new"):
        with pytest.raises(UserError, match="models directory not found"):  # --out accepted; no model here
            _predict(config, out)


# --------------------------------------------------------------------------------------------
# crs train: models/ and runs.json together; MLflow runs FAILED, never left RUNNING
# --------------------------------------------------------------------------------------------


def _runs(tracking_uri: str) -> dict[str, str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    return {r.info.run_id: r.info.status for e in client.search_experiments() for r in client.search_runs([e.experiment_id])}


def test_killed_train_keeps_models_with_runs_json_and_its_run_ends_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from tests.pipeline.test_train import make_landmarks, write_landmarks

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    params = {"targets": {"crs_severe": {"event": "CRS", "min_grade": 3}}, "landmarks_hours": [0.0, 24.0, 48.0, 72.0],
              "train": {"n_splits": 2, "n_repeats": 1, "n_estimators": 10, "n_bootstrap": 10, "n_trials": 1,
                        "max_rounds": 10, "calibration_fraction": 0.34, "n_jobs": 1},
              "paths": {"landmarks": str(tmp_path / "landmarks.parquet"), "oof": str(tmp_path / "oof.parquet"),
                        "oof_explanations": str(tmp_path / "oof_explanations"), "models_dir": str(tmp_path / "models")}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    config = load_config(tmp_path / "params.yaml")
    write_landmarks(make_landmarks(80), config)
    train.main(config)
    models = tmp_path / "models"
    before = {p.relative_to(models).as_posix(): p.read_bytes() for p in models.rglob("*") if p.is_file()}
    assert "runs.json" in before

    child = _start(tmp_path, ["train", "-p", "params.yaml"], "after", models)  # killed between the two renames
    _wait_for(child, tmp_path / "paused")
    _kill(child)
    left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".models."))
    assert left and all(_ignored(name) for name in left)
    assert "RUNNING" in _runs(uri).values()  # SIGKILL: nothing could end the run

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:  # the next train: its start restores models/, then it fails itself
        patch.setattr(train, "write_models", disk_full)
        with pytest.raises(OSError, match="No space left"):
            train.main(config)
    after = {p.relative_to(models).as_posix(): p.read_bytes() for p in models.rglob("*") if p.is_file()}
    assert after == before
    statuses = _runs(uri)
    assert "RUNNING" not in statuses.values() and "FAILED" in statuses.values()

    train.main(config)
    assert json.loads((models / "runs.json").read_text()) != json.loads(before["runs.json"])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".models.")]
    runs = json.loads((models / "runs.json").read_text())
    assert _runs(uri)[runs["parent_run_id"]] == "FINISHED"
