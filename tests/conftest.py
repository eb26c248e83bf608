"""Shared test helpers."""

from __future__ import annotations

from pathlib import Path

import pytest


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
