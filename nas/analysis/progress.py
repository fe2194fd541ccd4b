"""How the search progressed: hypervolume against real evaluations, and LINAS predictor quality per round."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.ticker import MaxNLocator

from nas.analysis import figures
from nas.analysis.run import RunData
from nas.analysis.tables import Column
from nas.search.pareto import hypervolume_history, loss_bounds, losses


def hypervolume_rows(run: RunData) -> list[dict[str, Any]]:
    """Hypervolume (normalised by the reference model, as the search reports it) after each evaluation."""
    if not run.evaluations or any(o.name not in run.reference for o in run.objectives):
        return []
    loss = losses(run.values(), run.objectives, run.reference)
    history = hypervolume_history(loss, loss_bounds(run.objectives))
    return [
        {"evaluations": i + 1, "trial": e.number, "hypervolume": hv}
        for i, (e, hv) in enumerate(zip(run.evaluations, history))
    ]


def plot_hypervolume(run: RunData, rows: list[dict[str, Any]], path: str | Path, dpi: int = 110) -> Path:
    """Hypervolume against evaluations; LINAS rounds (predictor fits) as dotted lines."""
    fig, ax = figures.figure(height=3.8)
    ax.step([r["evaluations"] for r in rows], [r["hypervolume"] for r in rows], where="post", color=figures.FRONT_COLOR)
    for i, rnd in enumerate(run.linas_rounds):
        ax.axvline(rnd.get("n_train", 0) + 0.5, color="0.6", ls=":", lw=0.8, label="LINAS round" if i == 0 else None)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("real evaluations")
    ax.set_ylabel("hypervolume (normalised by the reference)")
    ax.set_title(f"Hypervolume: {run.study_name} ({run.algorithm or 'search'})", fontsize=10)
    ax.grid(alpha=0.3)
    if run.linas_rounds:
        ax.legend(fontsize=8)
    return figures.save(fig, path, dpi)


def _number(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(out) else out


def predictor_rows(run: RunData) -> list[dict[str, Any]]:
    """One row per (round, objective): cross-validated and prospective Kendall tau and MAE."""
    rows = []
    for rnd in run.linas_rounds:
        for name, entry in (rnd.get("objectives") or {}).items():
            cv, pro = entry.get("cv") or {}, entry.get("prospective") or {}
            rows.append(
                {
                    "round": rnd.get("round"),
                    "n_train": rnd.get("n_train"),
                    "objective": name,
                    "cv_tau": _number(cv.get("kendall_tau")),
                    "cv_mae": _number(cv.get("mae")),
                    "prospective_tau": _number(pro.get("kendall_tau")),
                    "prospective_mae": _number(pro.get("mae")),
                    "prospective_n": pro.get("n"),
                }
            )
    return rows


PREDICTOR_COLUMNS = (
    Column("round", "round"),
    Column("n_train", "trained on"),
    Column("objective", "objective"),
    Column("cv_tau", "CV Kendall τ", ".3f"),
    Column("cv_mae", "CV MAE", ".4g"),
    Column("prospective_tau", "prospective τ", ".3f"),
    Column("prospective_mae", "prospective MAE", ".4g"),
    Column("prospective_n", "prospective n"),
)


def plot_predictors(rows: list[dict[str, Any]], path: str | Path, dpi: int = 110) -> Path:
    """Kendall tau (left) and MAE (right) of each objective's predictor per round, CV and prospective."""
    fig, (tau_ax, mae_ax) = figures.figure(width=5.2, height=3.8, ncols=2)
    for name in dict.fromkeys(r["objective"] for r in rows):
        mine = [r for r in rows if r["objective"] == name]
        rounds = [r["round"] for r in mine]
        for key, style in (("cv", "-o"), ("prospective", "--s")):
            tau = [np.nan if r[f"{key}_tau"] is None else r[f"{key}_tau"] for r in mine]
            mae = [np.nan if r[f"{key}_mae"] is None else r[f"{key}_mae"] for r in mine]
            if not all(np.isnan(tau)):
                tau_ax.plot(rounds, tau, style, ms=4, label=f"{name} {key}")
            if not all(np.isnan(mae)):
                mae_ax.plot(rounds, mae, style, ms=4, label=f"{name} {key}")
    tau_ax.set_ylabel("Kendall τ")
    tau_ax.set_ylim(-1.05, 1.05)
    mae_ax.set_ylabel("mean absolute error")
    for ax in (tau_ax, mae_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("LINAS round")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Predictor quality: cross-validated on the training set, prospective on the next round", fontsize=9)
    return figures.save(fig, path, dpi)
