"""Explanations: exact tree SHAP for every landmark row, the global summary, plots, MLflow logging.

SHAP values come from :meth:`pipeline.model.TargetModel.score` (XGBoost ``pred_contribs``: exact
TreeSHAP in log-odds, the same numbers ``crs report`` and ``crs predict`` show). The files of
``config.paths.shap_dir`` (default ``reports/shap/``, schema in docs/CONTRACTS.md):

* ``<target>.parquet``: per landmark row patient, landmark, base value, margin, calibrated
  probability, band and one ``shap__<feature>`` column per model feature;
* ``<target>_summary.csv``: every feature with analyte, summary, unit, description, mean |SHAP|, rank;
* ``<target>_bar.png``, ``<target>_beeswarm.png``, ``<target>_dependence_<feature>.png``.

Only the summary table and the plots go to MLflow (the run of each target's model): the Parquet file
holds patient ids and stays local. The stage ``crs explain`` (:mod:`pipeline.explain`) reads and
writes; everything here is a library (also used by ``crs report`` and ``crs predict``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from features import feature_table
from features.covariates import model_covariates
from pipeline import tracking
from pipeline.config import Config
from pipeline.contracts import LANDMARK_HOURS, PATIENT_ID, shap_column, shap_features
from pipeline.io import to_csv
from pipeline.model import ModelBundle, TargetModel, model_analytes, risk_band
from pipeline.model.setup import band_cutoffs
from pipeline.registry import load_registry

ID_COLUMNS = [PATIENT_ID, LANDMARK_HOURS, "base_value", "margin", "probability", "band"]
SUMMARY_COLUMNS = ["feature", "analyte", "summary", "unit", "description", "mean_abs_shap", "rank"]
SUMMARY_SUFFIX = "_summary"
MAX_FEATURES_SHOWN = 20  # bar chart and beeswarm: the top features by mean |SHAP|


def explain_target(model: TargetModel, landmarks: pd.DataFrame, config: Config) -> pd.DataFrame:
    """One target's SHAP frame (schema of ``reports/shap/<target>.parquet``). Pure."""
    scores = model.score(landmarks, with_shap=True)
    head = pd.DataFrame(
        {
            "patient_id": landmarks["patient_id"].astype("string").to_numpy(),
            "landmark_hours": landmarks["landmark_hours"].to_numpy(dtype=float),
            "base_value": scores.base_value.astype(float),
            "margin": scores.margin.astype(float),
            "probability": scores.probability.astype(float),
            "band": risk_band(scores.probability, *band_cutoffs(
                {model.target: model}, config, np.full(len(landmarks), model.target, dtype=object),
                landmarks["landmark_hours"].to_numpy(dtype=float))),
        }
    )
    head["patient_id"] = head["patient_id"].astype("string")
    head["band"] = head["band"].astype("string")
    values = pd.DataFrame(scores.shap, columns=[shap_column(f) for f in model.feature_names])
    return pd.concat([head, values], axis=1)


def explain_landmarks(bundle: ModelBundle, landmarks: pd.DataFrame, config: Config) -> dict[str, pd.DataFrame]:
    """Per target, exact SHAP (log-odds) + calibrated risk for every landmark row. Pure (no I/O)."""
    landmarks = landmarks.reset_index(drop=True)
    return {target: explain_target(model, landmarks, config) for target, model in bundle.targets.items()}


def shap_matrix(frame: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    """Feature names and the (rows, features) SHAP array from a SHAP frame."""
    names = shap_features(frame.columns)
    return names, frame[[shap_column(n) for n in names]].to_numpy(dtype=float)


def feature_definitions(config: Config, analytes: list[str]) -> pd.DataFrame:
    """features.feature_table for the model's analytes (units from the analyte registry), indexed by name."""
    return feature_table(analytes, model_covariates(config.static_features), load_registry().canonical_units).set_index("name")


def summary_table(frame: pd.DataFrame, config: Config, analytes: list[str]) -> pd.DataFrame:
    """Every feature -> analyte, summary, unit, description, mean |SHAP| and rank (1 = largest)."""
    names, values = shap_matrix(frame)
    mean_abs = np.abs(values).mean(axis=0) if len(values) else np.zeros(len(names))
    table = feature_definitions(config, analytes)
    out = pd.DataFrame({"feature": names, "mean_abs_shap": mean_abs})
    for col in ("analyte", "summary", "unit", "description"):
        # A feature absent from the table (e.g. a covariate added outside params) keeps blanks.
        out[col] = [str(table[col].get(n, "")) for n in names]
    out = out.sort_values("mean_abs_shap", ascending=False, kind="stable").reset_index(drop=True)
    out["rank"] = np.arange(1, len(out) + 1)
    return out[SUMMARY_COLUMNS]


# --------------------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def _numeric(series: pd.Series) -> tuple[np.ndarray, list[str] | None]:
    """Values to plot; categoricals become codes (NaN for missing) with their labels."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        codes = series.cat.codes.to_numpy(dtype=float)
        codes[codes < 0] = np.nan
        return codes, [str(c) for c in series.cat.categories]
    return pd.to_numeric(series.astype("object"), errors="coerce").to_numpy(dtype=float), None


def plot_bar(summary: pd.DataFrame, target: str, path: Path) -> None:
    plt = _pyplot()
    top = summary.head(MAX_FEATURES_SHOWN).iloc[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(top) + 1.2))
    ax.barh(top["feature"], top["mean_abs_shap"], color="#1f6fb4")
    ax.set_xlabel("mean |SHAP| (log-odds)")
    ax.set_title(f"{target}: global feature importance (all landmark rows)", fontsize=10)
    ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _swarm_offsets(x: np.ndarray, n_bins: int = 60, width: float = 0.4) -> np.ndarray:
    """Vertical jitter proportional to local density (a cheap beeswarm): rank within x bins."""
    if x.size == 0:
        return x
    lo, hi = np.nanmin(x), np.nanmax(x)
    bins = np.zeros(x.size, dtype=int) if hi <= lo else np.minimum(((x - lo) / (hi - lo) * n_bins).astype(int), n_bins - 1)
    order = np.argsort(bins, kind="stable")
    counts = np.bincount(bins, minlength=n_bins)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(x.size, dtype=float)
    rank[order] = np.arange(x.size) - np.repeat(starts, counts)
    # alternate above/below the axis, scaled so the densest bin fills +-width
    side = np.where(rank % 2 == 0, 1.0, -1.0)
    return side * np.ceil(rank / 2) / max(counts.max() / 2, 1) * width


def plot_beeswarm(frame: pd.DataFrame, landmarks: pd.DataFrame, summary: pd.DataFrame, target: str,
                  path: Path) -> None:
    plt = _pyplot()
    top = list(summary["feature"].head(MAX_FEATURES_SHOWN))
    fig, ax = plt.subplots(figsize=(8, 0.36 * len(top) + 1.5))
    cmap = plt.get_cmap("coolwarm")
    for i, feature in enumerate(reversed(top)):
        s = frame[shap_column(feature)].to_numpy(dtype=float)
        values, _ = _numeric(landmarks[feature]) if feature in landmarks else (np.full(len(s), np.nan), None)
        # colour = the feature's within-column rank (robust to skewed lab values); grey = missing
        colour = pd.Series(values).rank(pct=True).to_numpy()
        y = i + _swarm_offsets(s)
        missing = np.isnan(colour)
        ax.scatter(s[missing], y[missing], s=3, color="#b0b0b0", alpha=0.6, linewidths=0, rasterized=True)
        ax.scatter(s[~missing], y[~missing], s=3, c=colour[~missing], cmap=cmap, vmin=0, vmax=1,
                   alpha=0.8, linewidths=0, rasterized=True)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_yticks(range(len(top)), list(reversed(top)), fontsize=8)
    ax.set_xlabel("SHAP value (log-odds; > 0 pushes the estimate up)")
    ax.set_title(f"{target}: SHAP per landmark row (colour: feature value, low blue - high red; grey missing)",
                 fontsize=9)
    sm = plt.cm.ScalarMappable(cmap=cmap)
    cbar = fig.colorbar(sm, ax=ax, pad=0.01, aspect=40)
    cbar.set_ticks([0, 1], labels=["low", "high"])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_dependence(frame: pd.DataFrame, landmarks: pd.DataFrame, feature: str, unit: str, target: str,
                    path: Path) -> None:
    plt = _pyplot()
    s = frame[shap_column(feature)].to_numpy(dtype=float)
    x, labels = _numeric(landmarks[feature]) if feature in landmarks else (np.full(len(s), np.nan), None)
    fig, ax = plt.subplots(figsize=(6, 4))
    present = ~np.isnan(x)
    lm = landmarks["landmark_hours"].to_numpy(dtype=float)
    if labels is not None:
        x = x + np.random.default_rng(0).uniform(-0.2, 0.2, x.size)  # jitter categories
        ax.set_xticks(range(len(labels)), labels, rotation=30, fontsize=8)
    sc = ax.scatter(x[present], s[present], c=lm[present], cmap="viridis", s=6, alpha=0.7, linewidths=0,
                    rasterized=True)
    fig.colorbar(sc, ax=ax, label="landmark (h)")
    positive = x[present] > 0
    if labels is None and positive.any() and np.nanmax(x[present]) / max(np.nanmin(x[present][positive]), 1e-12) > 100:
        ax.set_xscale("symlog", linthresh=float(np.nanmin(x[present][positive])))  # lab values span decades
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel(f"{feature} ({unit})" if unit else feature)
    ax.set_ylabel("SHAP (log-odds)")
    n_missing = int((~present).sum())
    if n_missing:
        mean_missing = float(np.mean(s[~present]))
        ax.set_title(f"{target}: {feature}\n{n_missing} rows missing (mean SHAP {mean_missing:+.2f})", fontsize=9)
    else:
        ax.set_title(f"{target}: {feature}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def summary_key(target: str) -> str:
    """Key (and file stem) of a target's summary table among the explain outputs."""
    return f"{target}{SUMMARY_SUFFIX}"


def explain_with_summaries(bundle: ModelBundle, landmarks: pd.DataFrame, config: Config) -> dict[str, pd.DataFrame]:
    """Per target the SHAP frame (key: target) and its summary table (key: :func:`summary_key`). Pure."""
    frames = explain_landmarks(bundle, landmarks, config)
    out: dict[str, pd.DataFrame] = {}
    for target, frame in frames.items():
        out[target] = frame
        out[summary_key(target)] = summary_table(frame, config, model_analytes(bundle, config))
    return out


def write_plots(out_dir: Path, frame: pd.DataFrame, summary: pd.DataFrame, landmarks: pd.DataFrame, target: str,
                config: Config) -> None:
    """Bar chart, beeswarm and dependence plots (top ``explain.top_features``) of one target."""
    plot_bar(summary, target, out_dir / f"{target}_bar.png")
    plot_beeswarm(frame, landmarks, summary, target, out_dir / f"{target}_beeswarm.png")
    for _, row in summary.head(config.explain.top_features).iterrows():
        plot_dependence(frame, landmarks, row["feature"], row["unit"], target,
                        out_dir / f"{target}_dependence_{row['feature']}.png")


def write_outputs(out_dir: Path, outputs: dict[str, pd.DataFrame], landmarks: pd.DataFrame, config: Config,
                  targets: list[str]) -> None:
    """Write Parquet, summary CSV and PNGs of every target (``outputs``: :func:`explain_with_summaries`)."""
    landmarks = landmarks.reset_index(drop=True)
    for target in targets:
        frame, summary = outputs[target], outputs[summary_key(target)]
        frame.to_parquet(out_dir / f"{target}.parquet", index=False)
        to_csv(summary, out_dir / f"{summary_key(target)}.csv")
        write_plots(out_dir, frame, summary, landmarks, target, config)


def log_to_mlflow(out_dir: Path, bundle: ModelBundle, config: Config) -> None:
    """Summary table and plots into each target's training run (never the per-row Parquet)."""
    import mlflow

    with tracking.training_runs(bundle.runs or {}, config.train.experiment_name, "explain") as open_target:
        for target in bundle.targets:
            with open_target(target):
                for path in sorted(out_dir.glob(f"{target}_*")):
                    if path.suffix in (".csv", ".png"):
                        mlflow.log_artifact(str(path), artifact_path="explain")
