"""The ``crs`` command: one subcommand per pipeline stage.

Stage modules are imported inside each command so ``crs --help`` stays fast. A ``UserError`` (bad
input or configuration) is printed as one line on stderr with exit code 2, never as a traceback. Every
stage command holds the working directory's stage lock (``.crs.lock``) while it runs.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from features.errors import FeatureError
from pipeline.errors import UserError

app = typer.Typer(
    help="CRS / ICANS risk pipeline. Each command is one DVC stage (see dvc.yaml).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ParamsOption = Annotated[Path, typer.Option("--params", "-p", help="Parameters file.")]
ModelOption = Annotated[
    str | None,
    typer.Option(help="models/ directory (default paths.models_dir), or an MLflow model URI such as "
                 "models:/crs-severe-risk@champion or models:/crs-severe-risk/3."),
]


def _config(params: Path):
    from pipeline.config import load_config

    return load_config(params)


@app.command()
def simulate(
    params: ParamsOption = Path("params.yaml"),
    out: Annotated[Path | None, typer.Option(help="Output cohort directory (default paths.simulated_cohort).")] = None,
    n_patients: Annotated[int | None, typer.Option(min=1, help="Override simulate.n_patients.")] = None,
    seed: Annotated[int | None, typer.Option(help="Override simulate.seed.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="canonical (CSV tables) | sdtm (.xpt domains) | omop (DuckDB <out>/cdm.duckdb).")] = "canonical",
) -> None:
    """Write the simulated CAR-T cohort (canonical format, SDTM or OMOP, plus truth.json)."""
    from pipeline import simulate as stage

    stage.main(_config(params), out=out, n_patients=n_patients, seed=seed, fmt=fmt)


@app.command()
def ingest(
    params: ParamsOption = Path("params.yaml"),
    cohort: Annotated[Path | None, typer.Option(help="Override cohort.path.")] = None,
    out: Annotated[Path | None, typer.Option(help="Output directory (default paths.interim_dir).")] = None,
    report: Annotated[Path | None, typer.Option(help="Counts report (default paths.ingest_report).")] = None,
) -> None:
    """Validate and normalise a cohort; quarantine bad rows; write counts that reconcile."""
    from pipeline import ingest as stage

    stage.main(_config(params), cohort=cohort, out=out, report=report)


@app.command()
def grade(params: ParamsOption = Path("params.yaml")) -> None:
    """ASTCT CRS / ICANS grades: given, derived from raw observations, or both compared (cohort.grades)."""
    from pipeline import grade as stage

    stage.main(_config(params))


@app.command()
def featurize(
    params: ParamsOption = Path("params.yaml"),
    list_features: Annotated[
        bool, typer.Option("--list", help="Print every feature with its description and unit, then exit.")
    ] = False,
) -> None:
    """Build the leakage-safe landmark feature matrix with labels."""
    from pipeline import featurize as stage

    stage.main(_config(params), list_features=list_features)


@app.command()
def train(params: ParamsOption = Path("params.yaml")) -> None:
    """Cross-validate (grouped by patient), calibrate and fit XGBoost models per target."""
    from pipeline import train as stage

    stage.main(_config(params))


@app.command()
def register(
    params: ParamsOption = Path("params.yaml"),
    force: Annotated[bool, typer.Option("--force", help="Register even a target flagged small-data by crs train "
                                        "(fewer than train.min_events patients with the event).")] = False,
) -> None:
    """Log the scoring pipeline as the MLflow model crs-severe-risk and register a new version."""
    from pipeline import register as stage

    stage.main(_config(params), force=force)


@app.command()
def evaluate(params: ParamsOption = Path("params.yaml")) -> None:
    """Metrics with CIs against published scores; plots; MLflow logging."""
    from pipeline import evaluate as stage

    stage.main(_config(params))


@app.command()
def explain(params: ParamsOption = Path("params.yaml")) -> None:
    """Exact tree SHAP per landmark row, global SHAP plots and summary table; MLflow logging."""
    from pipeline import explain as stage

    stage.main(_config(params))


@app.command()
def report(
    params: ParamsOption = Path("params.yaml"),
    pseudonymise: Annotated[
        bool | None,
        typer.Option(
            "--pseudonymise/--no-pseudonymise",
            help="Replace patient ids by keyed pseudonyms in every output (key from $CRS_PSEUDONYM_KEY_FILE or "
            "$CRS_PSEUDONYM_KEY; see crs keygen); overrides report.pseudonymise.",
        ),
    ] = None,
) -> None:
    """Per-patient HTML risk reports, an index sorted by risk, and the TRIPOD+AI model card."""
    from pipeline import report as stage

    stage.main(_config(params), pseudonymise=pseudonymise)


@app.command()
def predict(
    cohort: Annotated[Path, typer.Argument(help="Cohort directory of the new patients (cohort contract; events optional).")],
    out: Annotated[Path, typer.Option(help="Output directory (replaced as a whole).")],
    model: ModelOption = None,
    at: Annotated[
        float | None, typer.Option("--at", help="Score every patient at this hour after infusion (default: latest landmark).")
    ] = None,
    params: ParamsOption = Path("params.yaml"),
    pages: Annotated[bool, typer.Option("--pages/--no-pages", help="Write explanations and HTML pages.")] = True,
    pseudonymise: Annotated[
        bool | None,
        typer.Option("--pseudonymise/--no-pseudonymise",
                     help="Keyed pseudonyms for patient ids in every output (key as for crs report; see crs keygen)."),
    ] = None,
    chunk_size: Annotated[
        int, typer.Option("--chunk-size", min=1, help="With --no-pages: patients featurized and scored at a time "
                          "(peak memory grows with it, not with the cohort).")
    ] = 50_000,
) -> None:
    """Score new patients: predictions.csv (risk, band, message per patient and target) and HTML pages."""
    from pipeline import predict as stage

    config = _config(params)
    stage.main(config, cohort, model or config.paths.models_dir, out, at, reports=pages, pseudonymise=pseudonymise,
               chunk_size=chunk_size)


@app.command()
def validate(
    cohort: Annotated[Path, typer.Argument(help="Labelled cohort directory the model never saw (cohort contract, with events).")],
    out: Annotated[Path, typer.Option(help="Output directory (replaced as a whole): validation.json, validation.html.")],
    model: ModelOption = None,
    recalibrate: Annotated[
        bool, typer.Option("--recalibrate", help="Fit a local intercept update (cross-validated before/after) and "
                           "write the recalibrated model to OUT/model.")] = False,
    with_slope: Annotated[bool, typer.Option("--with-slope", help="With --recalibrate: update the slope too.")] = False,
    register: Annotated[
        bool, typer.Option("--register", help="With --recalibrate: register OUT/model as a new version of "
                           "crs-severe-risk in MLflow, tagged with its parent model and cohort fingerprint.")] = False,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """External validation: AUROC (CI), calibration, alert rule and decision curve per target and landmark
    next to the model's own cross-validation, a drift report, and optional local recalibration."""
    from pipeline import validate as stage

    if (with_slope or register) and not recalibrate:
        raise UserError("--with-slope and --register need --recalibrate")
    config = _config(params)
    stage.main(config, cohort, model or config.paths.models_dir, out, with_recalibration=recalibrate,
               with_slope=with_slope, register=register)


@app.command()
def promote(
    version: Annotated[str | None, typer.Option(help="Registered version to promote (default: the `candidate`).")] = None,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Make a registered version the `champion` (models:/crs-severe-risk@champion): a human decision."""
    from pipeline.serving.registry import CHAMPION_ALIAS, MODEL_NAME
    from pipeline.serving.registry import promote as promote_version

    chosen = promote_version(_config(params), version)
    typer.echo(f"promote: {MODEL_NAME} version {chosen} is now @{CHAMPION_ALIAS} (models:/{MODEL_NAME}@{CHAMPION_ALIAS})")


@app.command()
def keygen(
    out: Annotated[Path, typer.Option(help="Key file to create (mode 0600; an existing file is never overwritten).")],
    stdout: Annotated[bool, typer.Option("--stdout", help="Also print the key (it is a secret).")] = False,
) -> None:
    """Create a random pseudonymisation key (32 bytes, hex) for --pseudonymise."""
    from pipeline.reporting.ids import KEY_FILE_ENV, write_key

    key = write_key(out)
    if stdout:  # the key itself only when asked: terminals and CI logs keep what is printed
        typer.echo(key)
    typer.echo(f"keygen: wrote a new key to {out} (mode 0600). Use it with: {KEY_FILE_ENV}={out} crs report "
               "--pseudonymise. Keep it secret and backed up: the same key gives the same pseudonyms.", err=stdout)


#: Commands that write outputs: each holds the stage lock of the working directory while it runs.
LOCKED_COMMANDS = frozenset(
    {"simulate", "ingest", "featurize", "train", "register", "evaluate", "explain", "report", "predict", "validate"}
)


def _locked(command: Callable[..., Any]) -> Callable[..., Any]:
    """``command`` run under :func:`pipeline.io.stage_lock` (``.crs.lock`` in the working directory, where
    ``dvc repro`` runs every stage): two concurrent stages would mix one run's outputs with another's."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        from pipeline.io import stage_lock

        with stage_lock(Path.cwd()):
            return command(*args, **kwargs)

    return run


# Wrapped here, not in the callback of the app: `crs <command> --help` must not need the lock.
for _info in app.registered_commands:
    if _info.callback is not None and _info.callback.__name__ in LOCKED_COMMANDS:
        _info.callback = _locked(_info.callback)


def main() -> None:
    try:
        app()
    except (UserError, FeatureError) as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
