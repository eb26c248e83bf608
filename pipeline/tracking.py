"""MLflow helpers shared by ``crs train`` and ``crs evaluate``.

Tracking URI: ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///mlflow.db`` in the working directory (the
repo root under ``dvc repro``), so no server is needed. ``train`` opens one parent run with a child run
per target and records the run ids in ``models/runs.json``; ``evaluate`` reopens those runs so a model
and its metrics sit in the same run.

Every run a stage opens carries the tags ``crs.owner`` (pid and start time of the process) and
``crs.host``: an exception ends the run FAILED, and a run left RUNNING by a killed process (SIGKILL
cannot be caught) is marked FAILED by :func:`fail_stale_runs` when the next stage opens runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import subprocess
import sys
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pipeline.io import owner_alive, owner_token

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
OWNER_TAG = "crs.owner"
HOST_TAG = "crs.host"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


@contextlib.contextmanager
def quiet_mlflow() -> Iterator[None]:
    """Silence MLflow's informational chatter (DB migrations, schema hints, env inference)."""
    loggers = [logging.getLogger(name) for name in ("mlflow", "alembic", "urllib3")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"mlflow.*")
            warnings.filterwarnings("ignore", category=UserWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def setup(experiment_name: str) -> str:
    """Point MLflow at the tracking store and experiment; returns the experiment id."""
    import mlflow

    # Avoid a slow pip/conda environment inference per logged model; the lock file pins versions.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from mlflow.exceptions import MlflowException

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    root = artifact_root(uri)
    if root is not None and mlflow.get_experiment_by_name(experiment_name) is None:
        try:
            mlflow.create_experiment(experiment_name, artifact_location=root)
        except MlflowException:
            if mlflow.get_experiment_by_name(experiment_name) is None:  # not created meanwhile by another stage
                raise
    experiment = mlflow.set_experiment(experiment_name)
    return experiment.experiment_id


def artifact_root(uri: str) -> str | None:
    """Where a new experiment of a SQLite store keeps its artifacts: ``mlruns/`` beside the database
    file. MLflow's own default is ``./mlruns`` of the current directory, so a run against a store
    elsewhere (another project folder, a test's temporary one) would write its models here."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(uri)  # parsed as MLflow's SQLAlchemy store parses it (%-escapes, query, driver)
    except ArgumentError:
        return None
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return (Path(url.database).resolve().parent / "mlruns").as_uri()


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested params -> {"train.max_depth": "3", "train.monotone_constraints.il6__fold_change": "1"}."""
    out: dict[str, str] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            if value:
                out.update(flatten(value, f"{name}."))
            else:
                out[name] = "{}"
        elif isinstance(value, list | tuple):
            out[name] = ",".join(str(v) for v in value)
        else:
            out[name] = str(value)
    return out


#: Source files whose bytes define what the code computes (code, registry tables, page templates).
_CODE_SUFFIXES = (".py", ".csv", ".j2", ".css", ".js", ".json", ".yaml")


def code_digest() -> str:
    """sha256 over the source that has run in this process: every ``pipeline`` / ``features`` module
    imported so far, plus the data files (registry tables, templates) of the packages imported.

    Recorded in model metadata instead of the git commit: it names the code exactly, yet stays the same
    across commits that do not touch the code the stage ran. The stage's DVC deps cover every module it
    imports (tests/test_architecture.py), so a change to a digested file always reruns the stage, and a
    change elsewhere (a report template) leaves the model bytes, and a fresh clone's ``dvc.lock``, as
    committed."""
    import features

    roots = [Path(__file__).resolve().parent, Path(features.__file__).resolve().parent]
    files: set[Path] = set()
    for module in list(sys.modules.values()):
        source = getattr(module, "__file__", None)
        path = Path(source).resolve() if source else None
        root = next((r for r in roots if path is not None and path.is_relative_to(r)), None)
        if root is None:
            continue
        files.add(path)
        if path.name == "__init__.py":  # a package's own data files (not its sub-packages' code)
            files.update(f for f in path.parent.rglob("*") if f.is_file() and f.suffix in _CODE_SUFFIXES
                         and f.suffix != ".py" and "__pycache__" not in f.parts)
    named = sorted((f"{root.name}/{f.relative_to(root).as_posix()}", f)
                   for f in files for root in roots if f.is_relative_to(root))
    digest = hashlib.sha256()
    for name, file in named:
        digest.update(f"{name}\0".encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def git_commit(cwd: str | Path = ".") -> str:
    """HEAD commit of the repository at ``cwd`` ("unknown" outside git)."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and commit else "unknown"


def metric_key(*parts: str) -> str:
    """MLflow metric names allow letters, digits, ``_ - . / :`` and spaces; keep keys to those."""
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./: ")
    return "/".join("".join(c if c in allowed else "_" for c in part) for part in parts)


def owner_tags() -> dict[str, str]:
    """Tags naming the process that writes a run, so a run it leaves RUNNING can be recognised as stale."""
    return {OWNER_TAG: owner_token(), HOST_TAG: socket.gethostname()}


def fail_stale_runs(experiment_id: str) -> list[str]:
    """Mark FAILED this experiment's runs still RUNNING whose writing process (on this host) is gone;
    returns their ids. Runs of live processes, other hosts or other tools are left alone."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    host, stale = socket.gethostname(), []
    for run in client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000):
        owner = run.data.tags.get(OWNER_TAG)
        if owner and run.data.tags.get(HOST_TAG) == host and not owner_alive(owner):
            client.set_terminated(run.info.run_id, status="FAILED")
            stale.append(run.info.run_id)
    return stale


def run_exists(run_id: str) -> bool:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        MlflowClient().get_run(run_id)
    except MlflowException:
        return False
    return True


@contextlib.contextmanager
def training_runs(runs: Mapping[str, Any], experiment_name: str, stage: str) -> Iterator[Any]:
    """Reopen the training parent run recorded in ``runs`` (``models/runs.json``) and yield
    ``open_target(target)``, a context manager that reopens that target's child run (or starts one);
    when the runs are not in this tracking store, a new ``stage`` parent run takes their place."""
    import mlflow

    with quiet_mlflow():
        fail_stale_runs(setup(experiment_name))
        parent_id = runs.get("parent_run_id")
        if not (runs.get("tracking_uri") == tracking_uri() and parent_id and run_exists(parent_id)):
            print(f"{stage}: training runs not found in this tracking store; logging to a new run")
            parent_id, runs = None, {"targets": {}}
        with mlflow.start_run(run_id=parent_id, run_name=None if parent_id else stage, tags=owner_tags()) as parent:

            def open_target(target: str) -> Any:
                run_id = runs.get("targets", {}).get(target)
                kwargs = {"run_id": run_id} if run_id else {"run_name": target}
                return mlflow.start_run(nested=True, parent_run_id=parent.info.run_id, tags=owner_tags(), **kwargs)

            yield open_target
