"""The crs-severe-risk pyfunc model: registered from code, no pickle, served over REST on loopback with
the same probabilities as crs predict and the Python scorer."""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import predict, register
from pipeline.adapters.frames import raw_to_combined, read_new_cohort
from pipeline.errors import UserError
from pipeline.predict import Scorer, load_setup
from pipeline.scoring import score_cohort
from pipeline.serving.registry import MODEL_NAME, log_and_register, unscoreable_features
from tests.helpers import paths_in
from tests.pipeline.test_predict import build_bundle

PATIENTS = ["P00001", "P00002", "P00003", "P00004", "P00005", "P00006", "P00007", "P00008"]
MLFLOW = Path(sys.executable).with_name("mlflow")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("mlflow_model")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.chdir(root)  # never the repo's mlflow.db / mlruns
        config, cohort, models = build_bundle(root)
        info = log_and_register(config, models)
        yield {"root": root, "config": config, "cohort": cohort, "models": models, "info": info}


@pytest.fixture(scope="module")
def server(registered):
    port = _free_port()
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{registered['root'] / 'mlflow.db'}",
        # The server execs `uvicorn` by name: the venv's bin must be on PATH.
        "PATH": f"{MLFLOW.parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    log = open(registered["root"] / "serve.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [str(MLFLOW), "models", "serve", "-m", f"models:/{MODEL_NAME}/latest", "--env-manager", "local",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=registered["root"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    import requests

    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 45
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow models serve exited: {(registered['root'] / 'serve.log').read_text()[-2000:]}")
            try:
                if requests.get(f"{url}/ping", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("mlflow models serve did not answer /ping within 45 s")
            time.sleep(0.25)
        yield url
    finally:
        # The server and its workers share the session we started: stop exactly that group.
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except ProcessLookupError:
            pass  # already gone
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        log.close()


def _payload(frame: pd.DataFrame, params: dict | None = None) -> dict:
    split = frame.to_dict(orient="split", index=False)
    body: dict = {"dataframe_split": {"columns": split["columns"], "data": split["data"]}}
    if params:
        body["params"] = params
    return body


def _reference(registered, at_hours: float | None = None) -> pd.DataFrame:
    setup = predict.load_setup(registered["models"], registered["config"])
    preds = score_cohort(read_new_cohort(registered["cohort"]), setup, at_hours).predictions
    return preds[preds["patient_id"].isin(PATIENTS)].reset_index(drop=True)


def test_model_is_registered_from_code_without_pickle(registered):
    import mlflow
    from mlflow import MlflowClient

    version = MlflowClient().get_model_version(MODEL_NAME, str(registered["info"]["version"]))
    assert version.status == "READY"
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{MODEL_NAME}/latest"))
    files = [p for p in local.rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix in {".pkl", ".pickle", ".joblib", ".cloudpickle"}]
    assert any(p.name == "pyfunc.py" for p in files)  # the model is code
    assert {"booster_0.json", "calibrator.json", "features.json", "metadata.json", "scoring_config.json",
            "analytes.csv", "units.csv"} <= {p.name for p in files}
    assert "loader_module: mlflow.pyfunc.loaders.code_model" in (local / "MLmodel").read_text()


def test_in_process_pyfunc_and_crs_predict_with_uri_agree(registered, tmp_path):
    import mlflow

    reference = _reference(registered)
    combined = raw_to_combined(read_new_cohort(registered["cohort"]), PATIENTS)
    model = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}/latest")
    got = model.predict(combined).reset_index(drop=True)
    assert list(got["patient_id"]) == list(reference["patient_id"])
    assert np.allclose(got["probability"], reference["probability"], rtol=0, atol=1e-9, equal_nan=True)
    assert list(got["band"]) == list(reference["band"])
    # crs predict given the registry URI scores with the registered artifacts: same numbers.
    out = tmp_path / "out"
    result = predict.main(registered["config"], registered["cohort"], f"models:/{MODEL_NAME}/latest", out,
                          reports=False)
    via_uri = result.predictions[result.predictions["patient_id"].isin(PATIENTS)].reset_index(drop=True)
    assert np.allclose(via_uri["probability"], reference["probability"], rtol=0, atol=1e-9, equal_nan=True)
    with pytest.raises(UserError, match="cannot load the MLflow model"):
        predict.load_setup("models:/no-such-model/latest", registered["config"])


def test_serve_answers_rest_with_the_same_probabilities(registered, server):
    import requests

    cohort = read_new_cohort(registered["cohort"])
    combined = raw_to_combined(cohort, PATIENTS)
    response = requests.post(f"{server}/invocations", json=_payload(combined), timeout=30)
    assert response.status_code == 200, response.text[:500]
    served = pd.DataFrame(response.json()["predictions"])
    reference = _reference(registered)
    assert list(served["patient_id"]) == list(reference["patient_id"])
    assert list(served["target"]) == list(reference["target"])
    probability = pd.to_numeric(served["probability"]).to_numpy(dtype=float)
    assert np.allclose(probability, reference["probability"], rtol=0, atol=1e-9, equal_nan=True)
    assert list(served["band"]) == list(reference["band"])

    # The Python API agrees too (one patient).
    scorer = Scorer(registered["models"], registered["config"])
    measurements = pd.read_csv(registered["cohort"] / "measurements.csv", dtype=str)
    patients = pd.read_csv(registered["cohort"] / "patients.csv", dtype=str)
    treatments = pd.read_csv(registered["cohort"] / "treatments.csv", dtype=str)
    events = pd.read_csv(registered["cohort"] / "events.csv", dtype=str)
    pid = PATIENTS[1]
    risk = scorer.score_patient(measurements[measurements["patient_id"] == pid],
                                patients[patients["patient_id"] == pid].iloc[0],
                                treatments=treatments[treatments["patient_id"] == pid],
                                events=events[events["patient_id"] == pid])
    assert any(math.isfinite(p) for p in risk.probability.values())  # not vacuous: something is scored
    for target, p in risk.probability.items():
        row = served[(served["patient_id"] == pid) & (served["target"] == target)]
        q = float(pd.to_numeric(row["probability"]).iloc[0])
        assert (math.isnan(p) and math.isnan(q)) or abs(p - q) <= 1e-9

    # A fixed hour through REST params, and a patient the model cannot use: a message, not an error.
    at = requests.post(f"{server}/invocations", json=_payload(combined, {"at_hours": 24.0}), timeout=30)
    assert at.status_code == 200, at.text[:500]
    at_served = pd.DataFrame(at.json()["predictions"])
    at_reference = _reference(registered, 24.0)
    assert np.allclose(pd.to_numeric(at_served["probability"]).to_numpy(dtype=float),
                       at_reference["probability"], rtol=0, atol=1e-9, equal_nan=True)
    empty = pd.DataFrame({"patient_id": ["NEW"], "time": [None], "analyte": [None], "value": [None],
                          "unit": [None], "age": [55], "product": ["axi-cel"]})
    answer = requests.post(f"{server}/invocations", json=_payload(empty), timeout=30)
    assert answer.status_code == 200, answer.text[:500]
    rows = answer.json()["predictions"]
    assert {r["patient_id"] for r in rows} == {"NEW"}
    assert all(r["probability"] is None or not math.isfinite(float(r["probability"])) for r in rows)
    assert all("no usable measurements" in r["message"] for r in rows)


def test_only_scoreable_models_are_registered(registered):
    # A bundle whose features featurize cannot produce (hand-made landmark tables) is not registered.
    assert unscoreable_features(registered["config"], registered["models"]) == []
    other = registered["config"].model_copy(update={"static_features": []})
    assert unscoreable_features(other, registered["models"]) == ["age", "costim", "product", "target_antigen"]
    assert json.loads((registered["models"] / "crs_severe" / "features.json").read_text())["features"]


def test_register_stage_writes_what_it_registered(registered, tmp_path):
    """`crs register` is its own stage: a new version for scoreable models, a reason (and no version)
    otherwise; paths come from config, so nothing is read from or written to the working directory."""
    root = registered["root"]
    config = paths_in(registered["config"], tmp_path)
    config = config.model_copy(update={"paths": config.paths.model_copy(update={"models_dir": registered["models"]})})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.chdir(root)  # MLflow's default artifact root is relative to the working directory
        register.main(config)
        record = json.loads(config.paths.registration.read_text())
        assert record["registered"] is True and record["model_name"] == MODEL_NAME
        assert int(record["version"]) >= 2  # the fixture registered version 1
        # The stage's DVC out: no version or run id, so the same models give the same bytes.
        marker = config.paths.registered.read_bytes()
        assert json.loads(marker) == {"model_name": MODEL_NAME, "registered": True, "models_manifest_sha256":
                                      hashlib.sha256((registered["models"] / "manifest.json").read_bytes()).hexdigest()}
        register.main(config)
        assert config.paths.registered.read_bytes() == marker
        assert json.loads(config.paths.registration.read_text())["version"] != record["version"]
        unscoreable = config.model_copy(update={"static_features": []})
        assert register.run(unscoreable, registered["models"], {}) == {
            "registered": False, "model_name": MODEL_NAME,
            "reason": "featurize does not produce model features age, costim, product, target_antigen with these params",
        }
    empty = tmp_path / "empty_models"
    empty.mkdir()
    assert register.run(config, empty, {})["reason"] == "no trained target"


def test_registration_is_a_candidate_and_promote_makes_the_champion(registered):
    """Aliases (issue 13): every registration is `@candidate`; only `crs promote` moves `@champion`, and
    predict loads `models:/crs-severe-risk@champion`."""
    import mlflow

    from pipeline.serving.registry import CANDIDATE_ALIAS, CHAMPION_ALIAS, promote

    root = registered["root"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.chdir(root)
        client = mlflow.MlflowClient()
        candidate = client.get_model_version_by_alias(MODEL_NAME, CANDIDATE_ALIAS).version
        assert promote(registered["config"]) == str(candidate)
        assert client.get_model_version_by_alias(MODEL_NAME, CHAMPION_ALIAS).version == candidate
        setup = load_setup(f"models:/{MODEL_NAME}@{CHAMPION_ALIAS}", registered["config"])
        assert set(setup.targets) == set(registered["config"].targets)
        with pytest.raises(UserError, match="promote crs-severe-risk"):
            promote(registered["config"], "999")
