"""Pareto-front plots (LLaMA-NAS Figs. 1-5): one accuracy-like objective against one cost.

Every evaluated sub-network in grey, the front on these two objectives as a line with markers, the
unmodified model as a red point and, when the pipeline quantized the Pareto set, each method's
results (the cost is then the real memory footprint for size objectives) with their own marker,
linked to the 16-bit point they came from, and the pruning baselines (when scored) with a marker per method.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from nas.analysis import figures
from nas.analysis.baselines import overlay_baselines
from nas.analysis.run import RunData
from nas.analysis.search_intervals import search_interval
from nas.analysis.units import cost_objectives, label, quality_objectives, scale, slug
from nas.search.confirmation import PRETRAINED, REFERENCES
from nas.search.objectives import Objective
from nas.search.pareto import losses, pareto_mask


def pairs(objectives: list[Objective]) -> list[tuple[Objective, Objective]]:
    """(accuracy-like, cost) pairs to plot; with no such pair, the first two objectives."""
    out = [(q, c) for q in quality_objectives(objectives) for c in cost_objectives(objectives)]
    return out or [(objectives[0], objectives[1])]


def front_2d(x: np.ndarray, y: np.ndarray, x_obj: Objective, y_obj: Objective) -> np.ndarray:
    """Indices of the points non-dominated on (x, y), ordered by x."""
    if len(x) == 0:
        return np.zeros(0, dtype=int)
    loss = losses(np.stack([x, y], axis=1), [x_obj, y_obj], {x_obj.name: 1.0, y_obj.name: 1.0})
    idx = np.flatnonzero(pareto_mask(loss))
    return idx[np.lexsort((y[idx], x[idx]))]


def staircase(x_obj: Objective) -> str:
    """Matplotlib drawstyle that traces the border of the region a front (sorted by x) dominates.

    A member dominates everything worse on both axes, so between two members the border stays level
    and then steps: at the first member's value when x is a cost (it covers larger x), at the second's
    when x is maximised (it covers smaller x). Never the straight segment, which no sub-network attains.
    """
    return "steps-pre" if x_obj.maximize else "steps-post"


def quantized_x(result: Any, cost: Objective) -> float | None:
    """The quantized model's cost: its real footprint for size objectives, else its measured value."""
    if cost.kind == "size_gb" and result.footprint_gb is not None:
        return float(result.footprint_gb)
    value = result.values.get(cost.name)
    return None if value is None else float(value)


def _overlay_infeasible(ax: Any, run: RunData, quality: Objective, cost: Objective) -> None:
    """Evaluations that broke a constraint: faint crosses, never part of a front."""
    shown = [e for e in run.infeasible if cost.name in e.values and quality.name in e.values]
    if shown:
        ax.scatter(
            [e.values[cost.name] for e in shown],
            [e.values[quality.name] * scale(quality) for e in shown],
            s=14,
            marker="x",
            color="0.82",
            label=f"break a constraint ({len(shown)})",
            zorder=0,
        )


def plot_pareto(
    run: RunData,
    quality: Objective,
    cost: Objective,
    path: str | Path,
    dpi: int = 110,
    points: str = "evaluated sub-networks",
) -> Path:
    """Write the plot of `quality` (y) against `cost` (x) to `path`; `points` names the grey points."""
    sy = scale(quality)
    x = np.array([e.values[cost.name] for e in run.evaluations], dtype=np.float64)
    y = np.array([e.values[quality.name] for e in run.evaluations], dtype=np.float64) * sy
    fig, ax = figures.figure()
    ax.scatter(x, y, s=16, color="0.65", alpha=0.8, label=f"{points} ({len(x)})", zorder=1)
    _overlay_infeasible(ax, run, quality, cost)
    front = front_2d(x, y / sy, cost, quality)
    ax.plot(
        x[front],
        y[front],
        "-o",
        drawstyle=staircase(cost),
        color=figures.FRONT_COLOR,
        ms=5,
        lw=1.5,
        label=f"Pareto front ({len(front)})",
        zorder=3,
    )
    _front_error_bars(ax, run, quality, cost, [run.evaluations[i] for i in front])
    ref_x, ref_y = run.reference.get(cost.name), run.reference.get(quality.name)
    if ref_x is not None and ref_y is not None:
        ax.scatter(
            [ref_x],
            [ref_y * sy],
            s=70,
            color=figures.REFERENCE_COLOR,
            edgecolor="black",
            zorder=5,
            label=run.reference_label,
        )
    _overlay_pretrained(ax, run, quality, cost)
    _overlay_quantized(ax, run, quality, cost, {run.evaluations[i].number for i in front})
    overlay_baselines(ax, run.baselines, quality, cost)
    ax.set_xlabel(
        label(cost) + (" (quantized: measured footprint)" if cost.kind == "size_gb" and run.quantized.methods else "")
    )
    ax.set_ylabel(label(quality))
    ax.set_title(f"{quality.name} vs {cost.name}: {run.study_name}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return figures.save(fig, path, dpi)


def _front_error_bars(ax: Any, run: RunData, quality: Objective, cost: Objective, front: list[Any]) -> None:
    """95% intervals of the front's search scores (and the unmodified model's), where the items were counted."""
    sy = scale(quality)
    points = [(e.values[cost.name], e.values[quality.name], search_interval(quality, e.details)) for e in front]
    reference = run.reference.get(cost.name), run.reference.get(quality.name)
    if None not in reference:
        points.append((*reference, search_interval(quality, run.reference_details)))  # type: ignore[arg-type]
    shown = [(x, y, iv) for x, y, iv in points if iv is not None]
    if not shown:
        return
    xs = [x for x, _, _ in shown]
    low = [(y - iv[0]) * sy for _, y, iv in shown]
    high = [(iv[1] - y) * sy for _, y, iv in shown]
    ax.errorbar(
        xs,
        [y * sy for _, y, _ in shown],
        yerr=[low, high],
        fmt="none",
        ecolor="0.35",
        elinewidth=0.8,
        capsize=2,
        zorder=2,
        label="95% interval (search items)",
    )


def _overlay_pretrained(ax: Any, run: RunData, quality: Objective, cost: Objective) -> None:
    """The pre-trained model (before reordering and fine-tuning) on the search's items, when the confirm stage
    scored it there: the second reference, told apart from the search's own."""
    pretrained = run.confirmation.reference(PRETRAINED) if run.confirmation is not None else None
    if pretrained is None or run.reference_label == "unmodified model":
        return
    x, y = pretrained["search_values"].get(cost.name), pretrained["search_values"].get(quality.name)
    if x is not None and y is not None:
        ax.scatter(
            [x],
            [y * scale(quality)],
            s=120,
            marker="s",
            facecolor="none",  # hollow: the fine-tuned full network can sit at the same point
            edgecolor="tab:orange",
            linewidths=1.8,
            zorder=5,
            label=REFERENCES[PRETRAINED],
        )


def _overlay_quantized(ax: Any, run: RunData, quality: Objective, cost: Objective, front: set[int]) -> None:
    """Each quantization method's points; a dotted link from each front member to its quantized self."""
    sy = scale(quality)
    by_number = {e.number: e for e in run.evaluations}
    for index, method in enumerate(run.quantized.methods):
        marker, color = figures.quantized_style(method, index)
        points = []
        for r in run.quantized.of_method(method):
            qx, qy = quantized_x(r, cost), r.values.get(quality.name)
            if qx is None or qy is None:
                continue
            if r.is_reference:
                ax.scatter(
                    [qx],
                    [qy * sy],
                    s=80,
                    marker=marker,
                    color=figures.REFERENCE_COLOR,
                    edgecolor="black",
                    zorder=5,
                    label=f"{run.reference_label}, {method.upper()}",
                )
                continue
            points.append((qx, qy * sy))
            source = by_number.get(r.trial) if r.trial is not None else None
            if source is not None and source.number in front:
                xs = [source.values[cost.name], qx]
                ax.plot(xs, [source.values[quality.name] * sy, qy * sy], ":", color=color, lw=0.8, zorder=2)
        if points:
            qx_arr, qy_arr = np.array(points).T
            front_q = front_2d(qx_arr, qy_arr / sy, cost, quality)
            ax.plot(
                qx_arr[front_q],
                qy_arr[front_q],
                "--",
                drawstyle=staircase(cost),
                color=color,
                lw=1.2,
                zorder=3,
            )
            ax.scatter(
                qx_arr,
                qy_arr,
                s=36,
                marker=marker,
                color=color,
                edgecolor="black",
                linewidth=0.5,
                zorder=4,
                label=f"{method.upper()} ({len(points)})",
            )


def speed_view(run: RunData, mode: str = "decode") -> tuple[RunData, Objective] | None:
    """The run restricted to the sub-networks the pipeline timed (the Pareto set and the unmodified
    model), with their measured `mode` throughput as one more objective, so that `plot_pareto` draws
    accuracy against throughput (LLaMA-NAS Figs. 2-5) when throughput was not searched; None when
    nothing was timed or throughput is an objective already."""
    if not run.speeds or any(o.is_speed for o in run.objectives):
        return None
    key = f"{mode}_tokens_per_s"
    speed = Objective(kind="throughput", direction="maximize", mode=mode)
    timed = [
        replace(e, values=e.values | {speed.name: run.speeds[e.number][key]})
        for e in run.evaluations
        if key in run.speeds.get(e.number, {})
    ]
    if not timed:
        return None
    reference = dict(run.reference)
    if key in run.speeds.get(None, {}):
        reference[speed.name] = run.speeds[None][key]
    quantized = replace(
        run.quantized,
        results=[
            replace(r, values=r.values | {speed.name: r.speed[key]}) for r in run.quantized.results if key in r.speed
        ],
    )
    view = replace(
        run, objectives=[*run.objectives, speed], evaluations=timed, reference=reference, quantized=quantized
    )
    return view, speed


def pareto_file_name(quality: Objective, cost: Objective) -> str:
    return f"pareto_{slug(quality.name)}_vs_{slug(cost.name)}.png"
