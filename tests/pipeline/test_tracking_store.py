"""Where MLflow keeps a new experiment's artifacts: beside its SQLite store, never the current directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import tracking


@pytest.mark.parametrize(("uri", "folder"), [
    ("sqlite:///mlflow.db", "."),
    ("sqlite:///my%20dir/x.db?timeout=5", "my dir"),
    ("sqlite+pysqlite:///a/b.db", "a"),
])
def test_a_sqlite_store_keeps_artifacts_beside_its_database(uri: str, folder: str, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert tracking.artifact_root(uri) == (tmp_path / folder / "mlruns").resolve().as_uri()


@pytest.mark.parametrize("uri", ["sqlite://", "sqlite:///:memory:", "file:///tmp/mlruns", "http://host:5000", "databricks"])
def test_other_stores_keep_mlflow_defaults(uri: str) -> None:
    assert tracking.artifact_root(uri) is None


def test_setup_creates_the_experiment_with_its_artifacts_beside_the_store(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    store = tmp_path / "elsewhere" / "mlflow.db"
    store.parent.mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    experiment_id = tracking.setup("beside-the-store")
    assert tracking.setup("beside-the-store") == experiment_id  # the second call finds it
    location = mlflow.get_experiment(experiment_id).artifact_location
    assert location == (store.parent / "mlruns").as_uri()
