"""``params.yaml`` parsed once into typed, validated objects.

Every section forbids unknown keys, so a typo such as ``train.max_dept`` is an error naming the key
rather than a silent default. Public contract keys: ``cohort.path``, ``targets``,
``landmarks_hours``, ``static_features``, ``simulate.n_patients``, ``simulate.seed``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.errors import UserError

DEFAULT_PARAMS = Path("params.yaml")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _registry_codes(codes: list[str]) -> list[str]:
    """Canonical analyte codes only (a synonym such as IL-6 would silently give empty features)."""
    from pipeline.registry import load_registry

    known = set(load_registry().analytes.index)
    for code in codes:
        if code not in known:
            raise ValueError(f"'{code}' is not a canonical analyte code (one of {', '.join(sorted(known))})")
    return codes


class CsvOptions(_Section):
    """How the cohort's CSV files are written. ``auto`` detects what hospital exports use: a UTF-8 BOM,
    Latin-1 text, ``;`` or tab delimiters and decimal commas; a declared value is used as given."""

    encoding: Literal["auto", "utf-8", "latin-1", "cp1252"] = "auto"
    delimiter: Literal["auto", ",", ";", "\t", "|"] = "auto"
    decimal: Literal["auto", ".", ","] = "auto"


class CohortConfig(_Section):
    #: Where the cohort is and in which standard: ``canonical`` (a directory, the cohort contract),
    #: ``sdtm`` (``path``: a folder of CDISC SDTM domains, ``.xpt`` or ``.csv``), ``omop`` (``url``: a
    #: SQLAlchemy URL of an OMOP CDM v5.4 database, e.g. ``duckdb:///cdm.duckdb`` or
    #: ``postgresql://user@host/db``, with the tables in ``schema``). README: "Your data in SDTM or OMOP".
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    format: Literal["canonical", "sdtm", "omop"] = "canonical"
    path: Path = Path("data/raw/synthetic")
    url: str | None = None
    db_schema: str | None = Field(default=None, alias="schema")
    #: OMOP: the person column that names patients (``person_source_value`` keeps a site's own ids, as
    #: ``crs simulate --format omop`` writes them).
    omop_patient_id: Literal["person_id", "person_source_value"] = "person_id"

    @model_validator(mode="after")
    def _omop_url(self) -> CohortConfig:
        if self.format == "omop" and not self.url:
            raise ValueError("cohort.format omop needs cohort.url (a SQLAlchemy URL such as duckdb:///cdm.duckdb)")
        return self
    #: Grading scale the cohort's event grades use; a grade on one scale is not a grade on another.
    grading_scale: Literal["ASTCT", "Lee2014", "Penn", "CARTOX", "CTCAE"] = "ASTCT"
    #: Where CRS / ICANS grades come from (``crs grade``, docs/grading.md): ``given`` (the events table),
    #: ``derive`` (graded from raw observations; the events table may be absent, its DEATH rows are
    #: kept), ``compare`` (given, plus agreement with the derived grades in the grading report).
    grades: Literal["given", "derive", "compare"] = "given"
    csv: CsvOptions = CsvOptions()


class GradingConfig(_Section):
    """ASTCT grading thresholds and holds (``crs grade`` with derive / compare; docs/grading.md). The
    thresholds are the consensus's; the holds (how long an observation stays in force) suit wards that
    take vitals every 4-8 h and ICE twice a day: lengthen them for sparser sampling."""

    fever_celsius: float = Field(default=38.0, gt=30, lt=45)
    fever_window_hours: float = Field(default=24.0, gt=0)
    fever_waiver_hours: float = Field(default=168.0, ge=0)
    sbp_below_mmhg: float = Field(default=90.0, gt=0)
    map_below_mmhg: float = Field(default=65.0, gt=0)
    vital_hold_hours: float = Field(default=8.0, gt=0)
    vasopressor_row_hours: float = Field(default=6.0, gt=0)
    low_flow_max_l_min: float = Field(default=6.0, gt=0)
    device_hold_hours: float = Field(default=24.0, gt=0)
    ice_hold_hours: float = Field(default=24.0, gt=0)
    consciousness_hold_hours: float = Field(default=24.0, gt=0)
    seizure_hold_hours: float = Field(default=24.0, gt=0)
    motor_hold_hours: float = Field(default=72.0, gt=0)
    edema_hold_hours: float = Field(default=72.0, gt=0)
    paediatric_max_age_years: float = Field(default=12.0, ge=0)


class IngestConfig(_Section):
    """Resource limits on input files (one-line error when exceeded) and the quarantine warning."""

    #: Largest size a table file may have once decompressed (``.csv.gz`` bombs stop here).
    max_file_mb: float = Field(default=2048.0, gt=0)
    max_rows: int = Field(default=50_000_000, ge=1)
    max_columns: int = Field(default=500, ge=1)
    #: Warn (console and ``ingest.json``) when one reason quarantines more than this share of a file's rows.
    quarantine_warning_share: float = Field(default=0.05, ge=0, le=1)
    #: A measurements table with more rows is validated in blocks of whole patients of about this many
    #: rows (same outputs, bounded working set); a smaller one whole, which is faster. None: always whole.
    chunk_rows: int | None = Field(default=5_000_000, ge=1)


class TargetConfig(_Section):
    event: str
    min_grade: int = Field(ge=1, le=5)

    @field_validator("event")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.strip().upper()


class SimulateConfig(_Section):
    n_patients: int = Field(default=1000, ge=1)
    seed: int = 20261121
    #: Inject realistic data-quality faults (listed exactly in truth.json).
    faults: bool = True


class PathsConfig(_Section):
    """Every file or folder one stage writes and another reads: defined here once, used by the stages and
    (through ``${paths.*}``) by ``dvc.yaml``; tests point them at a temporary folder."""

    simulated_cohort: Path = Path("data/raw/synthetic")
    interim_dir: Path = Path("data/interim")
    ingest_report: Path = Path("reports/ingest.json")
    #: ``crs grade`` outputs: events used for labels, the grade timeline, daily grades (docs/grading.md).
    graded_dir: Path = Path("data/graded")
    grading_report: Path = Path("reports/grading.json")
    landmarks: Path = Path("data/processed/landmarks.parquet")
    #: The analytes featurize used (with coverage) and the ones it left out, with reasons.
    feature_set: Path = Path("reports/feature_set.json")
    oof: Path = Path("data/processed/oof.parquet")
    #: Per target, the first CV repeat's fold models explaining the rows they scored (``<target>.parquet``,
    #: the explanations schema): what a training-cohort page shows and explains.
    oof_explanations: Path = Path("data/processed/oof_explanations")
    models_dir: Path = Path("models")
    registration: Path = Path("reports/registration.json")
    #: What `crs register` registered, without run ids or versions (the register stage's DVC out: the
    #: same bytes for the same models, and absent in a fresh clone, so the stage runs there).
    registered: Path = Path("reports/registered.json")
    metrics: Path = Path("reports/metrics.json")
    #: The headline figures only (per target: all-landmark AUROC and calibration slope), the file
    #: `dvc metrics show` / `dvc exp show` display; the full metrics.json stays, with its schema.
    metrics_summary: Path = Path("reports/summary.json")
    plots_dir: Path = Path("reports/plots")
    figures_dir: Path = Path("reports/figures")
    shap_dir: Path = Path("reports/shap")
    patients_dir: Path = Path("reports/patients")
    cohort_bands: Path = Path("reports/cohort_bands.parquet")
    model_card: Path = Path("reports/model_card.html")

    @property
    def runs(self) -> Path:
        """MLflow run ids of the training runs, written with the models."""
        return self.models_dir / "runs.json"


class FeaturizeConfig(_Section):
    horizon_hours: float = Field(default=720.0, gt=0, allow_inf_nan=False)
    baseline_window_hours: float = Field(default=168.0, gt=0)
    #: Analytes that get per-analyte kinetic features: ``auto`` (every analyte that at least
    #: ``min_coverage`` of patients and ``min_patients`` patients have at or before the last landmark,
    #: registry-unknown ones included when they have one unit; docs/features.md) or a list of
    #: canonical registry codes.
    analytes: Literal["auto"] | list[str] = "auto"
    min_coverage: float = Field(default=0.2, ge=0, le=1)
    min_patients: int = Field(default=10, ge=1)
    #: Without a pre-anchor baseline, the first value in (0, min(L, this)] h is the baseline
    #: (flagged by ``<analyte>__baseline_after_anchor``).
    baseline_fallback_hours: float = Field(default=24.0, ge=0)
    #: Patients per block when building the landmark matrix: patients are independent, so the frame is
    #: the same and peak memory follows the block size, not the cohort size (docs/scale.md).
    chunk_patients: int = Field(default=1_000_000, ge=1)
    #: Threads computing the features of a block's patients (consecutive patient ranges at once; the
    #: same table for any number). ``auto``: the cores this process may use, at most 4.
    n_threads: Annotated[int, Field(ge=1)] | Literal["auto"] = "auto"
    #: Analyte -> hours after the sample when its result is known, for cohorts without a measurements
    #: ``result_time`` column (e.g. 48-72 for batch-run research cytokine panels): features at L then use
    #: only results known by L. Default none (known when sampled).
    result_lag_hours: dict[str, Annotated[float, Field(ge=0, allow_inf_nan=False)]] = Field(default_factory=dict)

    @field_validator("analytes")
    @classmethod
    def _known_analytes(cls, value: Literal["auto"] | list[str]) -> Literal["auto"] | list[str]:
        return value if isinstance(value, str) else _registry_codes(value)


class TrainConfig(_Section):
    experiment_name: str = "crs-severe-risk"
    per_landmark: bool = False
    n_splits: int = Field(default=5, ge=2)
    #: Outer CV repeats (new shuffle per repeat). auto: 2 below ``repeat_twice_below_patients`` patients,
    #: else 1: a repeat steadies the estimate where a cohort is small (and cheap to fit); at 1,000
    #: patients one 5-fold pass already scores every patient once and a second doubles the cost.
    n_repeats: Annotated[int, Field(ge=1)] | Literal["auto"] = "auto"
    repeat_twice_below_patients: int = Field(default=500, ge=1)
    seed: int = 7
    #: auto: Platt (sigmoid) with landmark-specific intercepts, isotonic per landmark only when every
    #: landmark has at least ``isotonic_min_events`` events and non-events.
    calibration: Literal["auto", "isotonic", "sigmoid"] = "auto"
    isotonic_min_events: int = Field(default=200, ge=1)
    #: A landmark gets its own calibration intercept (and threshold) with at least this many events.
    landmark_min_events: int = Field(default=10, ge=1)
    #: Small-data guard: a target (or landmark) with fewer patients with the event than this is still
    #: trained and evaluated but flagged (console, metadata, metrics.json, model card) and `crs register`
    #: refuses it unless --force. 20 follows the usual minimum for a validation set's events and the
    #: TRIPOD/PROBAST concern about fewer than ~10 events per candidate predictor.
    min_events: int = Field(default=20, ge=1)
    #: Leave-one-site-out (internal-external) validation when the cohort has a ``site`` column with at
    #: least 3 sites: auto | off. It refits the procedure without the search (the configured booster
    #: params; rounds still by early stopping), once per site and target: less than one outer fold each.
    site_validation: Literal["auto", "off"] = "auto"
    sensitivity_target: float = Field(default=0.9, gt=0, lt=1)
    #: Risk bands from validated operating points: "low" is below the alert threshold (the
    #: ``sensitivity_target`` rule), "high" from the out-of-fold probability at which this share of
    #: patients without the event stay unflagged (90% specificity), per landmark; see report.bands.
    band_high_specificity: float = Field(default=0.9, gt=0, lt=1)
    n_bootstrap: int = Field(default=500, ge=0)
    #: Cross-fitting inside each training set: K boosters, each trained on K-1 patient folds; the
    #: calibrator and thresholds are fitted on each booster's scores of the fold it never saw, and the
    #: deployed model averages the K boosters (the same procedure inside every outer fold and at the end).
    inner_folds: int = Field(default=3, ge=2)
    #: Nested hyperparameter search (Optuna TPE, fixed seed) on the inner folds; off = the values below.
    tune: bool = True
    n_trials: int = Field(default=3, ge=1)
    #: With tuning, boosting rounds are chosen by early stopping on the inner folds (up to max_rounds).
    max_rounds: int = Field(default=400, ge=1)
    early_stopping_rounds: int = Field(default=20, ge=1)
    #: Blend weights of a cross-fitted L2 logistic model (numeric simple summaries) tried on the inner
    #: folds; trees only (0) is always a candidate. [] = trees only.
    linear_weights: list[Annotated[float, Field(gt=0, le=1)]] = Field(default_factory=lambda: [0.25, 0.5, 0.75])
    linear_C: float = Field(default=0.05, gt=0)
    #: Blend weights of K cross-fitted simple-summaries boosters (the untuned depth-2 reference on
    #: last/first/max/log ratio per analyte) tried on the inner folds before the linear blend; trees
    #: only (0) is always a candidate. [] = never. It steadies small cohorts (docs/training.md).
    simple_weights: list[Annotated[float, Field(gt=0, le=1)]] = Field(default_factory=lambda: [0.25, 0.5])
    #: Share of each outer training fold's patients held out (grouped, stratified) to fit the
    #: baselines' thresholds; the test fold is never used for either.
    calibration_fraction: float = Field(default=0.25, ge=0.1, le=0.5)
    #: Worker processes running outer folds in parallel (results do not depend on it).
    n_jobs: int = Field(default=2, ge=1)
    #: XGBoost threads per worker; 1 avoids OpenMP spin-wait thrashing when processes share cores.
    n_threads: int = Field(default=1, ge=1)
    # XGBoost hyperparameters (flat so `dvc exp run -S train.max_depth=4` works): the model without
    # tuning, and the first candidate of the search with tuning.
    n_estimators: int = Field(default=300, ge=1)
    max_depth: int = Field(default=3, ge=1)
    learning_rate: float = Field(default=0.05, gt=0)
    subsample: float = Field(default=0.8, gt=0, le=1)
    colsample_bytree: float = Field(default=0.8, gt=0, le=1)
    min_child_weight: float = Field(default=5.0, ge=0)
    reg_lambda: float = Field(default=1.0, ge=0)
    #: Histogram bins per feature (XGBoost ``max_bin``): fewer bins train faster; 64 loses nothing
    #: measurable on cohorts of hundreds to thousands of patients.
    max_bin: int = Field(default=64, ge=2)
    #: feature name -> +1 (may only raise risk) / -1 (may only lower it).
    monotone_constraints: dict[str, Literal[-1, 0, 1]] = Field(default_factory=dict)


class ExplainConfig(_Section):
    #: Features that get a dependence plot (by mean |SHAP|).
    top_features: int = Field(default=6, ge=1)


class ReportConfig(_Section):
    #: validated (default): bands from the model's validated operating points per target and landmark
    #: (train.sensitivity_target / train.band_high_specificity, stored with the model); fixed: the two
    #: cut-offs below for every target and landmark (also used for models trained before bands were stored).
    bands: Literal["validated", "fixed"] = "validated"
    #: Fixed risk bands on the calibrated probability: low < band_low_below <= intermediate < band_high_from <= high.
    band_low_below: float = Field(default=0.10, gt=0, lt=1)
    band_high_from: float = Field(default=0.30, gt=0, lt=1)
    top_drivers: int = Field(default=5, ge=1)
    #: Replace patient ids by keyed HMAC-SHA-256 pseudonyms in every report output (``crs keygen``).
    pseudonymise: bool = False
    #: Marker curves drawn on each patient page (canonical codes).
    markers: list[str] = Field(default_factory=lambda: ["IL6", "IFNG", "CRP", "FERRITIN", "IL10", "LDH"])
    #: Target whose event / no-event cohort bands are drawn behind the marker curves (default: first target).
    cohort_band_target: str | None = None

    @field_validator("markers")
    @classmethod
    def _known_markers(cls, value: list[str]) -> list[str]:
        return _registry_codes(value)

    @model_validator(mode="after")
    def _bands(self) -> ReportConfig:
        if self.band_low_below >= self.band_high_from:
            raise ValueError("band_low_below must be below band_high_from")
        return self


class Config(_Section):
    cohort: CohortConfig = CohortConfig()
    targets: dict[str, TargetConfig] = Field(
        default_factory=lambda: {
            "crs_severe": TargetConfig(event="CRS", min_grade=3),
            "icans_severe": TargetConfig(event="ICANS", min_grade=3),
        }
    )
    landmarks_hours: list[float] = Field(default_factory=lambda: [0.0, 24.0, 48.0, 72.0])
    static_features: list[str] = Field(default_factory=list)
    simulate: SimulateConfig = SimulateConfig()
    ingest: IngestConfig = IngestConfig()
    grading: GradingConfig = GradingConfig()
    paths: PathsConfig = PathsConfig()
    featurize: FeaturizeConfig = FeaturizeConfig()
    train: TrainConfig = TrainConfig()
    explain: ExplainConfig = ExplainConfig()
    report: ReportConfig = ReportConfig()

    @field_validator("landmarks_hours")
    @classmethod
    def _landmarks(cls, value: list[float]) -> list[float]:
        if not value:
            raise ValueError("needs at least one landmark")
        if len(set(value)) != len(value):
            raise ValueError("landmarks must be distinct")
        return sorted(value)

    @field_validator("targets")
    @classmethod
    def _targets(cls, value: dict[str, TargetConfig]) -> dict[str, TargetConfig]:
        if not value:
            raise ValueError("needs at least one target")
        return value

    @model_validator(mode="after")
    def _band_target(self) -> Config:
        target = self.report.cohort_band_target
        if target is not None and target not in self.targets:
            raise ValueError(f"report.cohort_band_target '{target}' is not one of the targets")
        return self


def landmark_key(hours: float) -> str:
    """The landmark as written in params and used as a key in metrics.json ("48", "12.5")."""
    return f"{hours:g}"


def _format_error(source: Path, error: ValidationError) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"])
    if first["type"] == "extra_forbidden":
        return f"{source}: unknown key '{key}'"
    return f"{source}: key '{key}': {first['msg']}"


def parse_config(raw: dict | None, source: Path = DEFAULT_PARAMS) -> Config:
    """Validate a parsed params mapping; errors name the file and key."""
    try:
        return Config.model_validate(raw or {})
    except ValidationError as exc:
        raise UserError(_format_error(source, exc)) from None


def load_config(path: str | Path = DEFAULT_PARAMS) -> Config:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: parameters file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if raw is not None and not isinstance(raw, dict):
        raise UserError(f"{path}: top level must be a mapping of keys")
    return parse_config(raw, path)
