"""Evaluation plots: dvc-plots data (ROC, PR, calibration, decision curve) and one PNG figure per target.

Both use the first CV repeat over all landmarks (each row predicted exactly once). Per landmark, the
model's calibration and decision curves pool every repeat (``calibration_by_landmark/L<h>``,
``decision_curve_by_landmark/L<h>``): each row counts once per repeat, so the curve averages the repeats.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_curve, roc_curve

from pipeline import contracts
from pipeline import metrics as M
from pipeline.config import landmark_key
from pipeline.model.baselines import SCORE_BASELINES

PLOT_KINDS = ("roc", "pr", "calibration", "decision_curve")
#: Per-landmark kinds: written as ``<plots_dir>/<kind>/L<landmark>/<target>.csv``.
LANDMARK_PLOT_KINDS = ("calibration_by_landmark", "decision_curve_by_landmark")
_GRID = np.round(np.arange(0.01, 0.51, 0.01), 2)
_TITLES = (
    ("ROC", "false positive rate", "true positive rate"),
    ("Precision-recall", "recall", "precision"),
    ("Calibration (deciles)", "predicted risk", "observed rate"),
    ("Decision curve", "threshold probability", "net benefit"),
)


def _first_repeat(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows["repeat"] == rows["repeat"].min()]


def _calibration_frame(y: np.ndarray, p: np.ndarray) -> pd.DataFrame:
    predicted, observed, counts = M.calibration_curve_bins(y, p, n_bins=10)
    return pd.DataFrame({"predicted": predicted, "observed": observed, "n": counts}).round(5)


def _decision_frame(y: np.ndarray, p: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "threshold": _GRID,
            "net_benefit": M.net_benefit(y, p, _GRID),
            "treat_all": M.net_benefit_treat_all(y, _GRID),
            "treat_none": 0.0,
        }
    ).round(5)


def landmark_plot_frames(rows: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per landmark, the model's calibration and decision curves over all repeats:
    ``"<kind>/L<landmark>"`` -> frame (the layout under ``plots_dir``)."""
    out: dict[str, pd.DataFrame] = {}
    for hours in sorted(rows[contracts.LANDMARK_HOURS].unique()):
        at = rows[rows[contracts.LANDMARK_HOURS] == hours]
        y = at["label"].to_numpy(dtype=float)
        p = at[contracts.prob_column(contracts.MODEL)].to_numpy(dtype=float)
        key = f"L{landmark_key(float(hours))}"
        out[f"{LANDMARK_PLOT_KINDS[0]}/{key}"] = _calibration_frame(y, p)
        out[f"{LANDMARK_PLOT_KINDS[1]}/{key}"] = _decision_frame(y, p)
    return out


def plot_frames(rows: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """dvc-plots data for one target (kind -> frame): the model's out-of-fold predictions, first repeat,
    then the per-landmark curves over all repeats (:func:`landmark_plot_frames`)."""
    first = _first_repeat(rows)
    y = first["label"].to_numpy(dtype=float)
    p = first[contracts.prob_column(contracts.MODEL)].to_numpy(dtype=float)
    fpr, tpr, _ = roc_curve(y, p)
    precision, recall, _ = precision_recall_curve(y, p)
    return {
        "roc": pd.DataFrame({"fpr": fpr, "tpr": tpr}).round(5),
        "pr": pd.DataFrame({"recall": recall[::-1], "precision": precision[::-1]}).round(5),
        "calibration": _calibration_frame(y, p),
        "decision_curve": _decision_frame(y, p),
        **landmark_plot_frames(rows),
    }


def ranking_score(rows: pd.DataFrame, name: str) -> np.ndarray:
    """What a scorer's ROC and PR curves rank: a published score's raw value (missing at the median of
    the observed values in ``rows``), else its probability."""
    column = contracts.score_column(name)
    if name not in SCORE_BASELINES or column not in rows.columns:
        return rows[contracts.prob_column(name)].to_numpy(dtype=float)
    raw = rows[column].to_numpy(dtype=float)
    return np.where(np.isfinite(raw), raw, np.nanmedian(raw) if np.isfinite(raw).any() else 0.0)


def _draw_curves(axes, first: pd.DataFrame, names: list[str], grid: np.ndarray) -> None:
    """ROC, PR and decision curves of every scorer in ``names``; the calibration curve of the model."""
    y = first["label"].to_numpy(dtype=float)
    for name in names:
        p = first[contracts.prob_column(name)].to_numpy(dtype=float)
        rank = ranking_score(first, name)
        style = {"lw": 2.2, "color": "black"} if name == contracts.MODEL else {"lw": 1.0, "alpha": 0.8}
        fpr, tpr, _ = roc_curve(y, rank)
        axes[0, 0].plot(fpr, tpr, label=f"{name} ({M.auroc(y, rank):.2f})", **style)
        precision, recall, _ = precision_recall_curve(y, rank)
        axes[0, 1].plot(recall, precision, label=name, **style)
        axes[1, 1].plot(grid, M.net_benefit(y, p, grid), label=name, **style)
    model_p = first[contracts.prob_column(contracts.MODEL)].to_numpy(dtype=float)
    predicted, observed, _ = M.calibration_curve_bins(y, model_p)
    axes[1, 0].plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
    axes[1, 0].plot(predicted, observed, marker="o", color="black", label=contracts.MODEL)
    axes[1, 1].plot(grid, M.net_benefit_treat_all(y, grid), ls="--", color="grey", label="treat all")
    axes[1, 1].axhline(0, color="grey", lw=1)
    axes[1, 1].set_ylim(-0.05, max(0.05, y.mean() * 1.1))
    axes[0, 0].plot([0, 1], [0, 1], ls=":", color="grey", lw=1)


def plot_figure(target: str, rows: pd.DataFrame, available: list[str], path: Path) -> None:
    """2x2 PNG at ``path``: ROC, PR, calibration, decision curve; model and available baselines."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    first = _first_repeat(rows)
    y = first["label"].to_numpy(dtype=float)
    fig, axes = plt.subplots(2, 2, figsize=(10, 9))
    _draw_curves(axes, first, [contracts.MODEL, *available], np.arange(0.01, 0.51, 0.01))
    for ax, (title, xlabel, ylabel) in zip(axes.ravel(), _TITLES, strict=True):
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"{target}: out-of-fold predictions, all landmarks, repeat 0 (n={len(y)}, events={int(y.sum())})")
    fig.tight_layout()
    fig.savefig(path, dpi=80, metadata={"Software": None})
    plt.close(fig)
