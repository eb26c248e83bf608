"""Log and register the scoring pipeline as the MLflow pyfunc model ``crs-severe-risk``.

Called by the ``crs register`` stage after training (:func:`register_trained_models`). The model is
``pipeline/serving/pyfunc.py`` logged *from code*; its artifacts are plain files:

* ``models/`` — ``<target>/booster_<k>.json`` (and ``simple_<k>.json`` / ``linear_<k>.json`` when blended), ``calibrator.json``, ``features.json``, ``metadata.json``,
  ``manifest.json`` and ``runs.json`` exactly as ``crs train`` wrote them (sha256-sealed);
* ``scoring_config.json`` — what turns raw records into the model's features and risk bands:
  ``landmarks_hours``, ``static_features``, ``featurize`` (analytes, baseline window, horizon),
  ``targets`` and the ``report`` band thresholds / top drivers;
* ``registry/analytes.csv``, ``registry/units.csv`` — the analyte registry (synonyms, unit conversions,
  plausible ranges) the model was registered with. Loading checks that the installed registry is
  identical, because ingest reads the installed one (a changed registry means changed ingest rules).

* ``bundle_manifest.json`` — the sha256 of every bundled file (code included); its own sha256 is the tag
  ``crs_pipeline.model_digest`` on the logged model and the registered version.

Loading a URI (:func:`load_registered_setup`) never calls ``mlflow.pyfunc.load_model``, which would import
the model's code first: it downloads the files, checks the MLmodel layout, the tag in the tracking store
and every digest, and only then reads the JSON/CSV files with the model layer's loader. Anything else is
"not a model logged by this project".

The model code imports this project (``pipeline``, ``features``), so it is served from an environment
where the project is installed (``mlflow models serve ... --env-manager local`` from this venv).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from features import feature_table
from features.covariates import model_covariates, source_columns
from pipeline import tracking
from pipeline.adapters.frames import COMBINED_PATIENT_COLUMNS
from pipeline.config import Config
from pipeline.errors import UserError
from pipeline.model import (
    SCORING_CONFIG_FILE,
    ScoringSetup,
    load_bundle,
    merge_scoring_config,
    model_analytes,
    scoring_config,
)
from pipeline.model.artifacts import FEATURES_FILE, MANIFEST_FILE

MODEL_NAME = "crs-severe-risk"
#: Registry aliases: the latest registration, and the version a human promoted for use.
CANDIDATE_ALIAS = "candidate"
CHAMPION_ALIAS = "champion"
ARTIFACT_NAME = "scoring_pipeline"
MODEL_CODE = Path(__file__).with_name("pyfunc.py")
REGISTRY_FILES = ("analytes.csv", "units.csv")
#: Tag on the logged model (and registered version): sha256 of the bundle manifest. The tracking store,
#: not the downloaded files, is what says "this project logged these bytes".
DIGEST_TAG = "crs_pipeline.model_digest"
BUNDLE_MANIFEST = "bundle_manifest.json"
CODE_MODEL_LOADER = "mlflow.pyfunc.loaders.code_model"
#: python_function artifacts as MLflow lays them out (``artifacts/<source name>``), exactly as logged.
ARTIFACT_PATHS = {
    "models": "artifacts/models",
    "scoring_config": f"artifacts/{SCORING_CONFIG_FILE}",
    **{f"registry_{Path(n).stem}": f"artifacts/{n}" for n in REGISTRY_FILES},
    "bundle_manifest": f"artifacts/{BUNDLE_MANIFEST}",
}
_REQUIRED_FILES = {MODEL_CODE.name, f"artifacts/{SCORING_CONFIG_FILE}", *(f"artifacts/{n}" for n in REGISTRY_FILES),
                   f"artifacts/models/{MANIFEST_FILE}"}


def _registry_dir() -> Any:
    return resources.files("pipeline.registry")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def setup_from_artifacts(artifacts: Mapping[str, str], base: Config | None = None) -> ScoringSetup:
    """A :class:`pipeline.model.ScoringSetup` from the pyfunc model's artifacts (JSON/CSV only)."""
    for name in REGISTRY_FILES:
        logged = Path(artifacts[f"registry_{Path(name).stem}"]).read_bytes()
        installed = _registry_dir().joinpath(name).read_bytes()
        if _sha256(logged) != _sha256(installed):
            raise UserError(
                f"{MODEL_NAME}: the installed analyte registry ({name}) differs from the one the model was "
                "registered with; ingest rules would differ. Install the matching pipeline version or retrain"
            )
    stored = json.loads(Path(artifacts["scoring_config"]).read_text())
    config = merge_scoring_config(base or Config(), stored)
    return ScoringSetup(load_bundle(artifacts["models"]), config, MODEL_NAME)


def is_registry_uri(model: str) -> bool:
    """An MLflow model URI (``models:/...``, ``runs:/...``, any ``scheme://``) rather than a directory."""
    return "://" in model or model.startswith(("models:/", "runs:/"))


def load_setup(model: str | Path, config: Config) -> ScoringSetup:
    """A ``models/`` directory (settings from ``config``) or an MLflow model URI (``models:/...``,
    ``runs:/...``): settings registered with the model win, so features match its training."""
    text = str(model)
    if is_registry_uri(text):
        return load_registered_setup(text, config)
    return ScoringSetup(load_bundle(model), config, text)


def load_registered_setup(uri: str, config: Config) -> ScoringSetup:
    """Scoring setup of a model logged by this project (``models:/crs-severe-risk/latest``, ``runs:/...``,
    ``file:///...``), loaded without running any code from the model.

    The artifacts are downloaded and checked first (:func:`verified_artifacts`: the MLmodel names our
    pyfunc, the bundle manifest's sha256 equals the tag the tracking store holds for that logged model,
    every bundled file matches the manifest); then the JSON/CSV files are read by our own loader.
    ``mlflow.pyfunc.load_model`` would import the model's code before any of that could be checked.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one line per error, no bars
    with tracking.quiet_mlflow(), tempfile.TemporaryDirectory(prefix="crs-model-") as tmp:
        mlflow.set_tracking_uri(tracking.tracking_uri())
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        except (MlflowException, OSError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"{uri}: cannot load the MLflow model ({first})") from None
        setup = setup_from_artifacts(verified_artifacts(uri, local))  # everything is read into memory here
    return ScoringSetup(setup.bundle, merge_scoring_config(config, scoring_config(setup.config)), uri)


def _foreign(uri: str, reason: str) -> UserError:
    return UserError(f"{uri}: is not a model logged by this project ({reason})")


def _pyfunc_flavor(uri: str, local: Path) -> tuple[str, dict[str, Any]]:
    """The logged model id and the python_function flavor of ``local/MLmodel``, which must be laid out
    exactly as :func:`log_and_register` logs it (our code file, our artifact names)."""
    import yaml

    path = local / "MLmodel"
    try:
        mlmodel = yaml.safe_load(path.read_text())  # safe_load: data only, no object construction
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        raise _foreign(uri, "no readable MLmodel file") from None
    flavor = (mlmodel.get("flavors") or {}).get("python_function") if isinstance(mlmodel, dict) else None
    if not isinstance(flavor, dict) or flavor.get("loader_module") != CODE_MODEL_LOADER:
        raise _foreign(uri, "not a pyfunc model from code")
    if Path(str(flavor.get("model_code_path"))).name != MODEL_CODE.name or flavor.get("code"):
        raise _foreign(uri, "its model code is not pipeline/serving/pyfunc.py")
    logged = flavor.get("artifacts")
    paths = {k: v.get("path") for k, v in logged.items() if isinstance(v, dict)} if isinstance(logged, dict) else {}
    if paths != ARTIFACT_PATHS:
        raise _foreign(uri, "its artifacts are not the ones this project logs")
    model_id = mlmodel.get("model_id")
    if not isinstance(model_id, str) or not model_id:
        raise _foreign(uri, "no logged model id")
    return model_id, flavor


def _recorded_digest(uri: str, model_id: str) -> str:
    """The bundle digest the tracking store recorded when this project logged ``model_id``."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        tags = MlflowClient().get_logged_model(model_id).tags or {}
    except MlflowException:
        raise _foreign(uri, f"its logged model is not in the tracking store {tracking.tracking_uri()}") from None
    digest = tags.get(DIGEST_TAG)
    if not isinstance(digest, str):
        raise _foreign(uri, f"no {DIGEST_TAG} tag; models registered before artifact digests: rerun `crs register`")
    return digest


def verified_artifacts(uri: str, local: Path) -> dict[str, str]:
    """The artifact paths of the downloaded model ``local`` once everything checks out, else a one-line
    :class:`UserError` saying it is not a model logged by this project. Reads files; runs no code."""
    model_id, _ = _pyfunc_flavor(uri, local)
    expected = _recorded_digest(uri, model_id)
    manifest_path = local / ARTIFACT_PATHS["bundle_manifest"]
    data = manifest_path.read_bytes() if manifest_path.is_file() else b""
    if _sha256(data) != expected:
        raise _foreign(uri, f"its bundle manifest does not match the {DIGEST_TAG} tag")
    files = json.loads(data).get("files", {})
    root = local.resolve()
    for rel, digest in files.items():
        path = (local / rel).resolve()
        if not path.is_relative_to(root) or not path.is_file() or _sha256(path.read_bytes()) != digest:
            raise _foreign(uri, f"{rel} does not match its recorded sha256")
    if not _REQUIRED_FILES <= set(files):
        raise _foreign(uri, "its bundle manifest misses required files")
    return {key: str(local / rel) for key, rel in ARTIFACT_PATHS.items()}


# --------------------------------------------------------------------------- signature and example


def _signature(config: Config):
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, ParamSchema, ParamSpec, Schema

    # Values may arrive as numbers or as text (censored "<1.5", timestamps): ingest parses either.
    columns = [ColSpec("string", "patient_id")]
    optional = ["time", "analyte", "value", "unit", "drug", "dose", "dose_unit", "event", "grade", "anchor_time",
                *(COMBINED_PATIENT_COLUMNS.get(c, c) for c in source_columns(config.static_features))]
    columns += [ColSpec(AnyType(), name, required=False) for name in dict.fromkeys(optional)]
    outputs = Schema([
        ColSpec("string", "patient_id"),
        ColSpec("string", "target"),
        ColSpec("double", "landmark_hours", required=False),
        ColSpec("double", "probability", required=False),
        ColSpec("string", "band"),
        ColSpec("string", "message"),
    ])
    params = ParamSchema([ParamSpec("at_hours", "double", None)])
    return ModelSignature(inputs=Schema(columns), outputs=outputs, params=params)


#: Example covariates with units (the rest: the first trained category or a neutral number).
_EXAMPLE_COVARIATES = {"tumor_burden": "35", "tumor_burden_unit": "SPD cm2", "dose": "2.0e6", "dose_unit": "cells/kg",
                       "disease": "LBCL", "product": "axi-cel"}


def input_example(config: Config, features: list[dict[str, Any]]) -> pd.DataFrame:
    """One synthetic patient (no real data): IL-6 and CRP before and after infusion, covariates set to
    the first trained category or a neutral number."""
    covariates: dict[str, Any] = {}
    by_name = {f["name"]: f for f in features}
    for name in source_columns(config.static_features):
        spec = by_name.get(name, {})
        value = (spec.get("categories") or [None])[0] if spec.get("dtype") == "category" else "1"
        covariates[COMBINED_PATIENT_COLUMNS.get(name, name)] = _EXAMPLE_COVARIATES.get(name, value)
    rows = [
        ("-24", "IL6", "4.2", "pg/mL"), ("-24", "CRP", "<3", "mg/L"),
        ("20", "IL-6", "85", "pg/mL"), ("20", "CRP", "4.1", "mg/dL"),
    ]
    frame = pd.DataFrame(rows, columns=["time", "analyte", "value", "unit"])
    frame.insert(0, "patient_id", "EXAMPLE-1")
    for name, value in covariates.items():
        frame[name] = value
    return frame.astype(object)


# --------------------------------------------------------------------------- logging


@contextlib.contextmanager
def _no_type_hint_warning() -> Iterator[None]:
    """Our pyfunc ``predict`` has no type hints on purpose (MLflow would validate inputs by them), and
    MLflow warns about that with raw terminal colour codes on every registration. Its loader forces
    UserWarnings to "once" (``filter_user_warnings_once``), overriding filters, so this one message is
    dropped where warnings are shown instead; every other warning is shown as before."""
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001 (warnings' API)
        if _TYPE_HINT_WARNING not in str(message):
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown


_TYPE_HINT_WARNING = "Add type hints to the `predict` method"


def log_and_register(
    config: Config, models_dir: str | Path, run_id: str | None = None, register: bool = True
) -> dict[str, Any]:
    """Log the pyfunc model into ``run_id`` (or a new run) and register it as ``crs-severe-risk``.

    Returns ``{"model_uri", "run_id", "version"}``. MLflow errors become one-line :class:`UserError`.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    models_dir = Path(models_dir)
    load_bundle(models_dir)  # never register files that fail their own digests
    first_target = next((p for p in sorted(models_dir.iterdir()) if (p / FEATURES_FILE).exists()), None)
    if first_target is None:
        raise UserError(f"{models_dir}: no trained target to register")
    features = json.loads((first_target / FEATURES_FILE).read_text())["features"]
    with tempfile.TemporaryDirectory(prefix="crs-register-") as tmp:
        settings = Path(tmp) / SCORING_CONFIG_FILE
        settings.write_text(json.dumps(scoring_config(config), indent=2) + "\n")
        registry = Path(tmp) / "registry"
        registry.mkdir()
        for name in REGISTRY_FILES:
            (registry / name).write_bytes(_registry_dir().joinpath(name).read_bytes())
        artifacts = {
            "models": str(models_dir.resolve()),
            "scoring_config": str(settings),
            **{f"registry_{Path(n).stem}": str(registry / n) for n in REGISTRY_FILES},
        }
        manifest = bundle_manifest(artifacts)
        artifacts["bundle_manifest"] = str(Path(tmp) / BUNDLE_MANIFEST)
        Path(artifacts["bundle_manifest"]).write_bytes(manifest)
        digest = _sha256(manifest)
        try:
            with tracking.quiet_mlflow(), _no_type_hint_warning():
                tracking.setup(config.train.experiment_name)
                with mlflow.start_run(run_id=run_id, run_name=None if run_id else "register"):
                    info = mlflow.pyfunc.log_model(
                        name=ARTIFACT_NAME,
                        python_model=str(MODEL_CODE),
                        artifacts=artifacts,
                        signature=_signature(config),
                        input_example=input_example(config, features),
                        # The project itself is the dependency; pins live in requirements.lock.
                        pip_requirements=["mlflow", "pandas", "pyarrow", "numpy", "xgboost", "scikit-learn"],
                        registered_model_name=MODEL_NAME if register else None,
                        await_registration_for=0,
                        tags={DIGEST_TAG: digest},  # on the logged model: what loading checks
                    )
                    version = getattr(info, "registered_model_version", None)
                    if version is not None:  # visible in the registry UI too
                        client = mlflow.MlflowClient()
                        client.set_model_version_tag(MODEL_NAME, str(version), DIGEST_TAG, digest)
                        # Every registration is a candidate; only `crs promote` (a human decision) makes
                        # a version the champion that predict and serving docs point at.
                        client.set_registered_model_alias(MODEL_NAME, CANDIDATE_ALIAS, str(version))
        except MlflowException as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"registering {MODEL_NAME} in {tracking.tracking_uri()} failed: {first}") from None
    return {"model_uri": info.model_uri, "run_id": info.run_id, "version": version}


def promote(config: Config, version: str | None = None) -> str:
    """Point the ``champion`` alias at ``version`` (default: the current ``candidate``); returns the
    version. A small-data model never became a version without ``crs register --force``."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        with tracking.quiet_mlflow():
            tracking.setup(config.train.experiment_name)
            client = mlflow.MlflowClient()
            chosen = version or client.get_model_version_by_alias(MODEL_NAME, CANDIDATE_ALIAS).version
            client.get_model_version(MODEL_NAME, str(chosen))  # fails clearly when it does not exist
            client.set_registered_model_alias(MODEL_NAME, CHAMPION_ALIAS, str(chosen))
    except MlflowException as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"promote {MODEL_NAME} in {tracking.tracking_uri()} failed: {first}") from None
    return str(chosen)


def bundle_manifest(artifacts: Mapping[str, str]) -> bytes:
    """JSON listing the sha256 of every file the model bundles, by its path inside the logged model
    (``pyfunc.py``, ``artifacts/...``); its own sha256 is the :data:`DIGEST_TAG` tag."""
    files = {MODEL_CODE.name: _sha256(MODEL_CODE.read_bytes())}
    for key, source in artifacts.items():
        source_path = Path(source)
        target = ARTIFACT_PATHS[key]
        if source_path.is_dir():
            files.update({f"{target}/{p.relative_to(source_path).as_posix()}": _sha256(p.read_bytes())
                          for p in sorted(source_path.rglob("*")) if p.is_file()})
        else:
            files[target] = _sha256(source_path.read_bytes())
    body = {"format": 1, "model_class": "pipeline.serving.pyfunc.CrsSevereRiskModel", "files": files}
    return (json.dumps(body, indent=2, sort_keys=True) + "\n").encode()


def unscoreable_features(config: Config, models_dir: str | Path) -> list[str]:
    """Model features that featurize does not produce under ``config`` (e.g. a model trained on a
    hand-made landmark table): such a model cannot score raw records, so it is not registered."""
    produced = set(feature_table(model_analytes(load_bundle(models_dir), config), model_covariates(config.static_features),
                                 units={})["name"])
    missing: set[str] = set()
    for path in Path(models_dir).glob(f"*/{FEATURES_FILE}"):
        missing |= {f["name"] for f in json.loads(path.read_text())["features"]} - produced
    return sorted(missing)


def register_trained_models(config: Config, models_dir: str | Path, runs: Mapping[str, Any]) -> dict[str, Any]:
    """Log the pyfunc model into the training parent run and register it; returns what happened.

    ``{"registered": bool, "reason" (when not), "model_name", "model_uri", "run_id", "version"}``.
    """
    models_dir = Path(models_dir)
    if not any(models_dir.glob(f"*/{FEATURES_FILE}")):
        return {"registered": False, "model_name": MODEL_NAME, "reason": "no trained target"}
    missing = unscoreable_features(config, models_dir)
    if missing:
        reason = f"featurize does not produce model features {', '.join(missing[:5])} with these params"
        return {"registered": False, "model_name": MODEL_NAME, "reason": reason}
    result = log_and_register(config, models_dir, run_id=runs.get("parent_run_id"))
    return {"registered": True, "model_name": MODEL_NAME, **result}
