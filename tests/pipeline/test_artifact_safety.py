"""Issue 12, artifacts are not trusted blindly: swapped, edited, escaping or out-of-range model files and
foreign MLflow models are refused with one line, before any of their content (or code) is used."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.adapters.frames import read_new_cohort
from pipeline.errors import UserError
from pipeline.model import Calibrator, load_bundle
from pipeline.model.artifacts import MANIFEST_FILE, manifest_bytes, seal_models_dir
from pipeline.predict import load_setup
from pipeline.scoring import score_cohort
from pipeline.serving.registry import BUNDLE_MANIFEST, DIGEST_TAG, MODEL_CODE, MODEL_NAME, log_and_register
from tests.pipeline.test_predict import build_bundle

MODIFIED = "sha256 does not match metadata.json; the model directory was modified after training"
FOREIGN = "is not a model logged by this project"
# Imported by MLflow when it loads the model: proves whether foreign code ran.
EVIL_CODE = '''
import os
from pathlib import Path

import mlflow

if os.environ.get("CRS_TEST_MARKER"):
    Path(os.environ["CRS_TEST_MARKER"]).write_text("foreign model code ran")


class Foreign(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input


mlflow.models.set_model(Foreign())
'''


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    """A small sealed model bundle, its cohort's reference predictions, and the model logged to a
    throwaway tracking store (as `crs register` does)."""
    root = tmp_path_factory.mktemp("artifact_safety")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.chdir(root)  # MLflow's artifact root is relative to the working directory
        config, cohort, models = build_bundle(root, n_patients=100)
        reference = score_cohort(read_new_cohort(cohort), load_setup(models, config)).predictions
        info = log_and_register(config, models)
        yield {"root": root, "config": config, "cohort": cohort, "models": models, "info": info,
               "reference": reference}


@pytest.fixture
def models(built, tmp_path: Path) -> Path:
    """A private copy of the sealed bundle to damage."""
    return Path(shutil.copytree(built["models"], tmp_path / "models"))


def _reseal_manifest(models: Path) -> None:
    """Rewrite only models/manifest.json over the current metadata files (an attacker who edits both
    metadata and the manifest): the checks further down must still catch the change."""
    sealed = {p.parent.name: p.read_bytes() for p in models.glob("*/metadata.json")}
    (models / MANIFEST_FILE).write_bytes(manifest_bytes(sealed))


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_boosters_swapped_between_targets_are_refused(models):
    crs, icans = models / "crs_severe" / "booster_0.json", models / "icans_severe" / "booster_0.json"
    crs_bytes, icans_bytes = crs.read_bytes(), icans.read_bytes()
    assert crs_bytes != icans_bytes
    crs.write_bytes(icans_bytes)
    icans.write_bytes(crs_bytes)
    with pytest.raises(UserError, match=rf"crs_severe/booster_0\.json: {MODIFIED}$"):
        load_bundle(models)


def test_target_directories_swapped_whole_are_refused(models):
    (models / "crs_severe").rename(models / "tmp")
    (models / "icans_severe").rename(models / "crs_severe")
    (models / "tmp").rename(models / "icans_severe")
    with pytest.raises(UserError, match=r"metadata\.json: sha256 does not match manifest\.json"):
        load_bundle(models)
    _reseal_manifest(models)  # digests fine, but each metadata names the other target
    with pytest.raises(UserError, match=r"written for another target than"):
        load_bundle(models)


def test_edited_calibrator_and_missing_files_are_refused(models):
    path = models / "crs_severe" / "calibrator.json"
    _edit_json(path, lambda c: c.update(y=[v / 2 for v in c["y"]]))  # still a valid calibrator
    with pytest.raises(UserError, match=rf"crs_severe/calibrator\.json: {MODIFIED}$"):
        load_bundle(models)
    path.unlink()
    with pytest.raises(UserError, match=r"crs_severe/calibrator\.json: model file not found"):
        load_bundle(models)


def test_edited_metadata_is_refused(models):
    _edit_json(models / "crs_severe" / "metadata.json", lambda m: m["models"]["all"].update(threshold=0.9))
    with pytest.raises(UserError, match=r"crs_severe/metadata\.json: sha256 does not match manifest\.json"):
        load_bundle(models)


def test_model_directories_without_digests_are_refused(models):
    (models / MANIFEST_FILE).unlink(missing_ok=True)
    with pytest.raises(UserError, match=r"manifest\.json: not found; model directories without sha256 digests"):
        load_bundle(models)
    for meta in models.glob("*/metadata.json"):
        _edit_json(meta, lambda m: m.pop("sha256"))
    _reseal_manifest(models)
    with pytest.raises(UserError, match=r"metadata\.json: no sha256 digests \(written before this version\)"):
        load_bundle(models)


def test_metadata_paths_cannot_leave_the_model_directory(models, tmp_path):
    target = models / "crs_severe"
    outside = tmp_path / "x.json"  # models/crs_severe/../../x.json: a valid booster, but not ours to read
    shutil.copy(target / "booster_0.json", outside)
    digest = hashlib.sha256(outside.read_bytes()).hexdigest()  # recorded, so only the path check can refuse

    def escape(m):
        m["models"]["all"]["boosters"] = ["../../x.json"]
        m.setdefault("sha256", {})["../../x.json"] = digest

    _edit_json(target / "metadata.json", escape)
    _reseal_manifest(models)
    with pytest.raises(UserError, match=r"models\.all\.boosters is not a plain model file name"):
        load_bundle(models)
    # A name that matches the pattern but whose landmark folder is a symlink leading out.
    (tmp_path / "elsewhere").mkdir()
    shutil.copy(outside, tmp_path / "elsewhere" / "booster_0.json")
    (target / "landmark_0").symlink_to(tmp_path / "elsewhere")

    def via_symlink(m):
        m["models"]["all"]["boosters"] = ["landmark_0/booster_0.json"]
        m.setdefault("sha256", {})["landmark_0/booster_0.json"] = digest

    _edit_json(target / "metadata.json", via_symlink)
    _reseal_manifest(models)
    with pytest.raises(UserError, match=r"landmark_0/booster_0\.json: resolves outside the model directory"):
        load_bundle(models)


def test_calibrator_that_can_leave_the_unit_interval_is_refused_at_load(models):
    path = models / "crs_severe" / "calibrator.json"
    _edit_json(path, lambda c: c.update(y=[5.0 for _ in c["y"]]))
    seal_models_dir(models)  # digests match: only the range check can catch it
    with pytest.raises(UserError, match=r"crs_severe/calibrator\.json: calibrator can give probabilities outside \[0, 1\]"):
        load_bundle(models)
    path.write_text(json.dumps({"method": "sigmoid", "a": 1.0, "b": float("nan")}))
    seal_models_dir(models)
    with pytest.raises(UserError, match=r"calibrator can give probabilities outside \[0, 1\] \(a parameter"):
        load_bundle(models)
    path.write_text(json.dumps({"method": "platt-ish", "a": 1.0, "b": 0.0}))  # was silently identity
    seal_models_dir(models)
    with pytest.raises(UserError, match=r"calibrator\.json: calibrator is incomplete or malformed"):
        load_bundle(models)


def test_calibrator_output_is_checked_at_scoring(built):
    setup = load_setup(built["models"], built["config"])
    setup.bundle.targets["crs_severe"].models["all"].calibrator = Calibrator("isotonic", [0.0, 1.0], [5.0, 5.0])
    with pytest.raises(UserError, match=r"crs_severe: the calibrator gave a probability outside \[0, 1\]"):
        score_cohort(read_new_cohort(built["cohort"]), setup)


def _foreign_code_dir(root: Path) -> Path:
    """A genuine MLflow models-from-code directory, written by someone else."""
    import mlflow

    code = root / "foreign_model.py"
    code.write_text(EVIL_CODE)
    path = root / "foreign"
    mlflow.pyfunc.save_model(str(path), python_model=str(code))
    return path


def test_foreign_models_from_code_are_refused_before_their_code_runs(built, tmp_path, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{built['root'] / 'mlflow.db'}")
    monkeypatch.chdir(built["root"])
    foreign = _foreign_code_dir(tmp_path)
    # Our own logged model with its code swapped for someone else's: same layout, same model id.
    ours = Path(mlflow.artifacts.download_artifacts(f"models:/{MODEL_NAME}/latest", dst_path=str(tmp_path / "ours")))
    (ours / "pyfunc.py").write_text(EVIL_CODE)
    marker = tmp_path / "marker"
    monkeypatch.setenv("CRS_TEST_MARKER", str(marker))
    with pytest.raises(UserError, match=FOREIGN):
        load_setup(foreign.resolve().as_uri(), built["config"])
    assert not marker.exists()
    with pytest.raises(UserError, match=rf"{FOREIGN} \(pyfunc\.py does not match its recorded sha256\)"):
        load_setup(ours.resolve().as_uri(), built["config"])
    assert not marker.exists()
    (ours / "pyfunc.py").write_bytes(MODEL_CODE.read_bytes())  # our code back, the manifest replaced
    (ours / "artifacts" / BUNDLE_MANIFEST).write_text("{}")  # a manifest of its own making
    with pytest.raises(UserError, match=rf"{FOREIGN} \(its bundle manifest does not match the {DIGEST_TAG} tag\)"):
        load_setup(ours.resolve().as_uri(), built["config"])


def test_our_logged_model_loads_and_scores_identically(built, tmp_path, monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{built['root'] / 'mlflow.db'}")
    monkeypatch.chdir(built["root"])
    info = built["info"]
    version = MlflowClient().get_model_version(MODEL_NAME, str(info["version"]))
    assert DIGEST_TAG in version.tags  # the registered version carries the bundle digest
    local = Path(mlflow.artifacts.download_artifacts(info["model_uri"], dst_path=str(tmp_path / "copy")))
    cohort = read_new_cohort(built["cohort"])
    reference = built["reference"]
    uris = (f"models:/{MODEL_NAME}/latest", info["model_uri"], f"runs:/{info['run_id']}/scoring_pipeline",
            local.resolve().as_uri())
    for uri in uris:
        got = score_cohort(cohort, load_setup(uri, built["config"])).predictions
        assert list(got["patient_id"]) == list(reference["patient_id"]), uri
        assert np.array_equal(got["probability"].to_numpy(float), reference["probability"].to_numpy(float),
                              equal_nan=True), uri
