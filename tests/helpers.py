"""Small helpers shared by test modules."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def in_workdir(workdir: Path) -> Iterator[None]:
    """cwd and a private MLflow store in ``workdir`` (never the repo's mlflow.db)."""
    old_cwd, old_uri = os.getcwd(), os.environ.get("MLFLOW_TRACKING_URI")
    os.chdir(workdir)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{workdir / 'mlflow.db'}"
    try:
        yield
    finally:
        os.chdir(old_cwd)
        if old_uri is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old_uri


def paths_in(config, root: Path):
    """``config`` with every stage-to-stage path (``config.paths``) moved under ``root`` (no chdir)."""
    moved = {name: Path(root) / Path(value) for name, value in config.paths.model_dump().items()}
    return config.model_copy(update={"paths": config.paths.model_copy(update=moved)})
