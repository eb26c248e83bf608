"""Shared test helpers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: The pipeline's outputs in the working copy: no test may write there (tests use tmp_path).
OUTPUT_DIRS = ("data", "models", "reports", "mlruns", "mlflow.db")


def _outputs_state() -> dict[str, tuple[int, int]]:
    """(mtime in ns, size) of every output file and folder of the working copy."""
    entries: list[str] = []
    for name in OUTPUT_DIRS:
        if (ROOT / name).is_file():
            entries.append(str(ROOT / name))
        for folder, _dirs, files in os.walk(ROOT / name):
            entries += [folder, *(os.path.join(folder, f) for f in files)]
    state: dict[str, tuple[int, int]] = {}
    for entry in entries:
        try:
            info = os.lstat(entry)
        except FileNotFoundError:  # renamed away meanwhile (an atomic write elsewhere): not ours to judge
            continue
        state[os.path.relpath(entry, ROOT)] = (info.st_mtime_ns, info.st_size)
    return state


@pytest.fixture(scope="session", autouse=True)
def session_tracking_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every MLflow run of the suite goes to a temporary store (a test may still point at its own), never
    to the working copy's ``mlflow.db``; child processes inherit it."""
    store = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
        yield


@pytest.fixture(scope="session", autouse=True)
def outputs_untouched() -> Iterator[None]:
    """The suite leaves the working copy's pipeline outputs as they were (a test that ran a stage with the
    default relative paths once rewrote ``data/processed/oof_explanations`` of the real run)."""
    before = _outputs_state()
    yield
    after = _outputs_state()
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"tests wrote into the working copy's outputs: {', '.join(changed[:5])}"


def write_cohort(directory: Path, tables: dict[str, str]) -> Path:
    """Write CSV texts (table name -> file content) into a cohort directory."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in tables.items():
        (directory / f"{name}.csv").write_text(text.strip() + "\n")
    return directory


@pytest.fixture
def cohort_writer(tmp_path: Path):
    def _write(tables: dict[str, str], name: str = "cohort") -> Path:
        return write_cohort(tmp_path / name, tables)

    return _write
