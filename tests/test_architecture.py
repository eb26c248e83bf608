"""The layout holds: layers import downward only, no import cycles, and every DVC stage depends on all
the code it runs (so a code change can never leave a stage's outputs silently stale)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "features")
STAGES = ("simulate", "ingest", "grade", "featurize", "train", "register", "evaluate", "explain", "report")
#: Package data read at run time (not imported), owned by the package that reads it.
PACKAGE_DATA = {"pipeline.registry": ("pipeline/registry",), "pipeline.reporting": ("pipeline/reporting",)}


def _lint_imports(project: Path) -> subprocess.CompletedProcess:
    """import-linter on the packages found first on the path (``project``), with the project's contracts."""
    code = (
        "import sys; from importlinter.cli import lint_imports; "
        f"sys.exit(lint_imports(config_filename={str(project / 'pyproject.toml')!r}, no_cache=True))"
    )
    return subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True, text=True,
                          env={"PYTHONPATH": str(project), "PATH": ""}, timeout=120)


def test_import_contracts_hold():
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout[-3000:]
    assert result.stdout.count("KEPT") == 3


@pytest.mark.parametrize(
    ("module", "added_import", "broken"),
    [
        ("pipeline/model/specs.py", "import pipeline.training.booster", "pipeline layers import downward only"),
        ("features/scores.py", "import pipeline.errors", "features is a leaf library"),
        ("pipeline/model/calibration.py", "import pipeline.model.scorer", "no import cycles"),
    ],
)
def test_import_contracts_fail_on_a_bad_import(tmp_path: Path, module: str, added_import: str, broken: str):
    """The check can fail: one upward (or cyclic) import, even inside a function, breaks a contract."""
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    with open(tmp_path / module, "a") as fh:
        fh.write(f"\n\ndef _added():\n    {added_import}\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    assert f"{broken}" in result.stdout and "BROKEN" in result.stdout


def _module_file(graph: grimp.ImportGraph, module: str) -> str:
    path = Path(*module.split("."))
    return f"{path}/__init__.py" if (ROOT / path).is_dir() else f"{path}.py"


def _files_run_by(graph: grimp.ImportGraph, stage_module: str) -> set[str]:
    modules = {stage_module, *graph.find_upstream_modules(stage_module)}
    # Importing a module runs its packages' __init__ files too.
    for module in list(modules):
        parts = module.split(".")
        modules.update(".".join(parts[:i]) for i in range(1, len(parts)))
    files = {_module_file(graph, m) for m in modules}
    for module, data_dirs in PACKAGE_DATA.items():
        if module in modules:
            files.update(data_dirs)
    return files


def _covered(path: str, deps: list[str]) -> bool:
    return any(path == dep or path.startswith(dep.rstrip("/") + "/") for dep in deps)


def test_every_stage_depends_on_all_the_code_it_imports():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert set(dvc) == set(STAGES)
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    for stage in STAGES:
        assert dvc[stage]["cmd"].split()[:2] == ["crs", stage]
        deps = [str(d) for d in dvc[stage]["deps"]]
        missing = sorted(f for f in _files_run_by(graph, f"pipeline.{stage}") if not _covered(f, deps))
        assert not missing, f"dvc.yaml stage '{stage}' runs code it does not list in deps: {missing}"


def test_dependency_check_sees_a_missing_dep():
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    files = _files_run_by(graph, "pipeline.train")
    assert "pipeline/model/calibration.py" in files and "features/landmarks.py" in files
    assert not _covered("pipeline/model/calibration.py", ["pipeline/train.py", "pipeline/training"])
