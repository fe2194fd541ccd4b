"""Compare the jobs of a multirun (e.g. `experiments=ablation_sampler`): a table and one figure.

Each job folder under the sweep directory holds a search's outputs (`search/` of a pipeline job, or the
folder itself for `python -m nas.search`). The summary has one row per job: its status (a failed job is
listed with its error, the others are still compared), evaluations, Pareto-front size, final
hypervolume and the unmodified model's values; `sweep_summary.png` overlays the jobs' fronts on the
first accuracy x cost pair and their hypervolume curves. A Hydra callback rewrites it after every job,
so it is there even when a job failed (Hydra then ends the sweep with an error, after every job ran).
"""

from __future__ import annotations

import csv
import json
import logging
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from nas.analysis import figures
from nas.analysis.pareto_plots import front_2d, pairs, staircase
from nas.analysis.tables import Column, format_table
from nas.analysis.units import label, objective_from_dict, scale
from nas.io.atomic import write_csv, write_json, write_text

log = logging.getLogger(__name__)

STATUS_FILE = "job_status.json"
FIGURE = "sweep_summary.png"
COLUMNS = (
    Column("label", "job"),
    Column("status", "status"),
    Column("evaluations", "evaluations"),
    Column("pareto_size", "Pareto size"),
    Column("hypervolume", "hypervolume", ".4f"),
)


def search_dir(job_dir: Path) -> Path:
    """Where a job's search outputs are: `search/` for pipeline jobs, the job folder for search jobs."""
    return job_dir / "search" if (job_dir / "search").is_dir() else job_dir


def job_dirs(sweep_dir: Path) -> list[Path]:
    """Folders of the sweep's jobs, in job-number order: those Hydra started (it writes `.hydra/`), those
    our callback recorded, and any holding a search summary."""

    def is_job(folder: Path) -> bool:
        markers = (folder / ".hydra", folder / STATUS_FILE, search_dir(folder) / "summary.json")
        return folder.is_dir() and any(m.exists() for m in markers)

    def order(folder: Path) -> tuple[int, str]:
        number = folder.name.split("_")[0]
        return (int(number) if number.isdigit() else 1 << 30, folder.name)

    return sorted((p for p in sweep_dir.iterdir() if is_job(p)), key=order)


def job_labels(names: list[str]) -> list[str]:
    """Short names for job folders `<n>_<k=v,...>`: the number and only the overrides that differ between jobs
    (folders without a number: just those overrides)."""
    parsed = []
    for name in names:
        number, _, rest = name.partition("_")
        if not number.isdigit():  # e.g. `python -m nas.search` sweeps name folders by their overrides alone
            number, rest = name, name
        overrides = dict(part.partition("=")[::2] for part in rest.split(",") if "=" in part)
        parsed.append((number, overrides, rest))
    keys = sorted({k for _, o, _ in parsed for k in o})
    varying = [k for k in keys if len({o.get(k) for _, o, _ in parsed}) > 1]
    labels = []
    for number, overrides, rest in parsed:
        shown = " ".join(f"{k}={overrides[k]}" for k in varying if k in overrides)
        text = shown or rest[:60] or "(no overrides)"
        labels.append(text if number == rest else f"{number}: {text}")
    return labels


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job: status and error, and the search summary's figures when it finished."""
    rows = []
    folders = job_dirs(sweep_dir)
    for job_dir, job_label in zip(folders, job_labels([p.name for p in folders]), strict=True):
        status_file = job_dir / STATUS_FILE
        status = json.loads(status_file.read_text()) if status_file.is_file() else {}
        summary_file = search_dir(job_dir) / "summary.json"
        summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
        rows.append(
            {
                "job": job_dir.name,
                "label": job_label,
                "status": status.get("status") or ("completed" if summary else "unfinished"),
                "error": status.get("error"),
                "evaluations": summary.get("evaluations"),
                "pareto_size": summary.get("pareto_size"),
                "hypervolume": summary.get("hypervolume"),
                "reference": summary.get("reference"),
                "objectives": summary.get("objectives"),
                "dir": str(job_dir),
            }
        )
    return rows


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _evaluated_values(job_dir: Path, names: tuple[str, str]) -> np.ndarray:
    """(n, 2) values of `names` over the job's real evaluations (duplicates and failures left out)."""
    points = []
    for row in _read_csv(search_dir(job_dir) / "trials.csv"):
        if row.get("state") != "COMPLETE" or row.get("evaluated") not in ("True", "true", "1"):
            continue
        try:
            points.append([float(row[names[0]]), float(row[names[1]])])
        except (KeyError, ValueError):
            continue
    return np.array(points, dtype=np.float64).reshape(-1, 2)


def plot_sweep(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Left: each job's front on the first accuracy x cost pair; right: hypervolume per evaluation."""
    done = [r for r in rows if r["objectives"]]
    if not done:
        return None
    objectives = [objective_from_dict(o) for o in done[0]["objectives"]]
    quality, cost = pairs(objectives)[0]
    fig, (ax_front, ax_hv) = figures.figure(ncols=2)
    references: set[tuple[float, float]] = set()
    for index, row in enumerate(done):
        color = f"C{index % 10}"
        job_dir = Path(row["dir"])
        values = _evaluated_values(job_dir, (cost.name, quality.name))
        if len(values):
            front = front_2d(values[:, 0], values[:, 1], cost, quality)
            ax_front.plot(
                values[front, 0],
                values[front, 1] * scale(quality),
                "-o",
                drawstyle=staircase(cost),
                color=color,
                ms=4,
                lw=1.3,
                label=row["label"],
            )
        curve = _read_csv(search_dir(job_dir) / "hypervolume.csv")
        if curve:
            ax_hv.plot(
                [int(p["evaluations"]) for p in curve],
                [float(p["hypervolume"]) for p in curve],
                color=color,
                lw=1.3,
                label=row["label"],
            )
        reference = row.get("reference") or {}
        if reference.get(cost.name) is not None and reference.get(quality.name) is not None:
            references.add((float(reference[cost.name]), float(reference[quality.name])))
    for n, (ref_x, ref_y) in enumerate(sorted(references)):
        ax_front.scatter(
            [ref_x],
            [ref_y * scale(quality)],
            s=70,
            color=figures.REFERENCE_COLOR,
            edgecolor="black",
            zorder=5,
            label="unmodified model" if n == 0 else None,
        )
    _decorate(ax_front, label(cost), label(quality), f"Pareto fronts: {quality.name} vs {cost.name}")
    _decorate(ax_hv, "real evaluations", "hypervolume (normalised by the unmodified model)", "Hypervolume")
    return figures.save(fig, path)


def _decorate(ax: Any, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xlabel(textwrap.fill(xlabel, 50))
    ax.set_ylabel(textwrap.fill(ylabel, 40))
    ax.set_title(textwrap.fill(title, 60), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")


def write_sweep_summary(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """Write `sweep_summary.csv`, `.md` and `.png` in `sweep_dir`; return the rows."""
    sweep_dir = Path(sweep_dir)
    rows = collect(sweep_dir) if sweep_dir.is_dir() else []
    if not rows:
        log.warning("No job folder in %s; nothing to compare.", sweep_dir)
        return rows
    write_csv([{k: v for k, v in r.items() if k != "objectives"} for r in rows], sweep_dir / "sweep_summary.csv")
    table = format_table(rows, COLUMNS)
    lines = [f"# Sweep {sweep_dir.name}", "", "```", table, "```", ""]
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        lines += ["## Failed jobs", "", *(f"- `{r['job']}`: {r['error']}" for r in failed), ""]
    lines += ["Job folders:", "", *(f"- {r['label'].split(':')[0]}: `{r['job']}`" for r in rows), ""]
    figure = plot_sweep(rows, sweep_dir / FIGURE)
    if figure is not None:
        lines += [f"![fronts and hypervolume of the jobs]({FIGURE})", ""]
    write_text("\n".join(lines), sweep_dir / "sweep_summary.md")
    log.info("Sweep summary (%s):\n%s", sweep_dir / "sweep_summary.md", table)
    return rows


def _error_text(job_return: JobReturn) -> str:
    error = job_return._return_value  # the exception of a failed job (`return_value` would re-raise it)
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {first_line}"[:300]


class SweepSummary(Callback):
    """Records each multirun job's status in its folder and rewrites the sweep summary after it."""

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        failed = job_return.status == JobStatus.FAILED
        status = {"status": "failed" if failed else "completed", "error": _error_text(job_return) if failed else None}
        job_dir = Path(config.hydra.runtime.output_dir)
        job_dir.mkdir(parents=True, exist_ok=True)
        write_json(status, job_dir / STATUS_FILE)
        write_sweep_summary(config.hydra.sweep.dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        write_sweep_summary(config.hydra.sweep.dir)
