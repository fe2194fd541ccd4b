"""Pruning baselines beside the front: reading `baselines.json` (the baselines job or pipeline stage), drawing
each method with its own marker, and the comparison tables in the shape of LLaMA-NAS Tables 3/4 and Klein
et al. Table 1: each baseline beside the best searched sub-network of the same or smaller cost, with the
accuracy difference per task.

N:M-sparse baselines are drawn twice on size axes, at their dense size (what is stored as it runs here)
and at their compressed N:M size (hollow marker), labelled.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas.analysis import figures
from nas.analysis.search_intervals import shown_interval
from nas.analysis.tables import Column
from nas.analysis.units import scale, shown, value_format
from nas.evaluation.registry import task_config
from nas.search.objectives import Objective

log = logging.getLogger(__name__)

FILE_NAME = "baselines.json"
MARKERS = {
    "llm_pruner": ("P", "tab:olive"),
    "slicegpt": ("D", "tab:cyan"),
    "magnitude_2_4": ("h", "tab:gray"),
    "wanda_2_4": ("8", "tab:brown"),
    "sparsegpt_2_4": ("*", "tab:pink"),
    "layer_drop": ("<", "tab:purple"),
    "width_cut": (">", "tab:orange"),
}


@dataclass(frozen=True)
class BaselineResult:
    """One pruned model, scored on the study's objectives."""

    method: str
    ratio: float
    values: dict[str, float]
    details: dict[str, Any] = field(default_factory=dict)
    compressed_bytes: dict[str, int] | None = None
    folder: str | None = None

    @property
    def label(self) -> str:
        return f"{self.method} {self.ratio:g}"

    def compressed_gb(self, dtype: str) -> float | None:
        if not self.compressed_bytes or dtype not in self.compressed_bytes:
            return None
        return self.compressed_bytes[dtype] / 1e9


def find_baselines_file(search_dir: Path, run_dir: Path) -> Path | None:
    """The pipeline's `baselines/baselines.json`, or one beside the study."""
    for folder in (run_dir / "baselines", search_dir, run_dir):
        if (folder / FILE_NAME).is_file():
            return folder / FILE_NAME
    return None


def read_baselines(path: Path | None, objectives: Sequence[Objective]) -> tuple[list[BaselineResult], list[str]]:
    """The baselines scored on every one of `objectives`, and notes on what was left out."""
    if path is None:
        return [], []
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return [], [f"{path} could not be read ({exc}); the baselines are left out."]
    names = {o.name for o in objectives}
    results, skipped = [], 0
    for entry in data.get("baselines", []) if isinstance(data, dict) else []:
        values = {k: float(v) for k, v in (entry.get("values") or {}).items() if isinstance(v, int | float)}
        if not names <= set(values):
            skipped += 1
            continue
        results.append(
            BaselineResult(
                method=str(entry.get("method")),
                ratio=float(entry.get("ratio", 0.0)),
                values=values,
                details=dict(entry.get("details") or {}),
                compressed_bytes=entry.get("compressed_bytes"),
                folder=entry.get("folder"),
            )
        )
    notes = [f"{skipped} baselines of {path} were scored on other objectives and are left out."] if skipped else []
    return results, notes


def overlay_baselines(ax: Any, baselines: Sequence[BaselineResult], quality: Objective, cost: Objective) -> None:
    """Each method's points with its own marker; N:M ones also at their compressed size on size axes."""
    sy = scale(quality)
    # Only baselines with both values (a throughput view timed the Pareto set, not the baselines).
    baselines = [b for b in baselines if cost.name in b.values and quality.name in b.values]
    for index, method in enumerate(dict.fromkeys(b.method for b in baselines)):
        marker, color = MARKERS.get(method, figures.OTHER_QUANTIZED[index % len(figures.OTHER_QUANTIZED)])
        mine = [b for b in baselines if b.method == method]
        xs = [b.values[cost.name] for b in mine]
        ys = [b.values[quality.name] * sy for b in mine]
        ax.scatter(xs, ys, s=60, marker=marker, color=color, edgecolor="black", linewidth=0.6, zorder=6, label=method)
        compressed = [(b.compressed_gb(cost.dtype), b.values[quality.name] * sy) for b in mine]
        points = [(x, y) for x, y in compressed if x is not None]
        if cost.kind == "size_gb" and points:
            cx, cy = zip(*points, strict=True)
            ax.scatter(
                cx,
                cy,
                s=60,
                marker=marker,
                facecolor="none",
                edgecolor=color,
                linewidth=1.2,
                zorder=6,
                label=f"{method} (2:4 compressed size)",
            )
            for x, y, (x2, _) in zip(xs, ys, compressed, strict=True):
                if x2 is not None:
                    ax.plot([x, x2], [y, y], ":", color=color, lw=0.8, zorder=2)


def comparison_rows(
    baselines: Sequence[BaselineResult],
    front: Sequence[Any],
    quality: Objective,
    cost: Objective,
    tasks: Sequence[str],
) -> tuple[list[dict[str, Any]], list[Column]]:
    """Each baseline beside the most accurate evaluated sub-network of the same or smaller cost, with the
    accuracy difference (sub-network minus baseline) on `quality` and each task's own metric."""
    rows = []
    for b in sorted(baselines, key=lambda b: (b.method, b.ratio)):
        affordable = [e for e in front if not_more_costly(e.values[cost.name], b.values[cost.name], cost)]
        best = max(affordable, key=lambda e: e.values[quality.name] * (1 if quality.maximize else -1), default=None)
        row: dict[str, Any] = {
            "baseline": b.label,
            cost.name: shown(cost, b.values[cost.name]),
            quality.name: shown(quality, b.values[quality.name]),
            "interval": shown_interval(quality, b.details),
            "trial": best.number if best is not None else "-",
            "sub_cost": shown(cost, best.values[cost.name]) if best is not None else None,
            "sub_quality": shown(quality, best.values[quality.name]) if best is not None else None,
            "sub_interval": shown_interval(quality, best.details) if best is not None else None,
        }
        if best is not None:
            row["difference"] = scale(quality) * (best.values[quality.name] - b.values[quality.name])
            for task in tasks:
                mine, theirs = _task_score(best.details, task), _task_score(b.details, task)
                if mine is not None and theirs is not None:
                    row[f"{task} diff"] = 100.0 * (mine - theirs)
        rows.append(row)
    fmt = value_format(quality)
    columns = [
        Column("baseline", "baseline (ratio)"),
        Column(cost.name, cost.name, value_format(cost)),
        Column(quality.name, quality.name, fmt),
        Column("interval", "95% interval"),
        Column("trial", "best sub-network (trial)"),
        Column("sub_cost", f"its {cost.name}", value_format(cost)),
        Column("sub_quality", f"its {quality.name}", fmt),
        Column("sub_interval", "95% interval"),
        Column("difference", "sub-network - baseline", "+.2f"),
    ] + [Column(f"{t} diff", f"{t} diff (pts)", "+.2f") for t in tasks]
    return rows, [c for c in columns if any(r.get(c.key) is not None for r in rows)]


def not_more_costly(value: float, budget: float, cost: Objective) -> bool:
    """Whether `value` costs at most `budget` (a maximised cost such as throughput: is at least it)."""
    return value >= budget if cost.maximize else value <= budget


def _task_score(details: dict[str, Any], task: str) -> float | None:
    """The task's own metric (acc_norm for ARC, acc for MMLU, ...) from a scorer's details."""
    value = details.get(f"{task}.score")
    if value is None:  # recorded before scores were kept by name: the configured metric's value
        value = details.get(f"{task}.{task_config(task).get('metric') or 'acc'}")
    return float(value) if isinstance(value, int | float) else None
