"""A Hydra callback that compares the jobs of a multirun (e.g. experiments=ablation_sampler) at its end.

Reads each job's `search/summary.json` (pipeline) or `summary.json` (search) under the sweep
directory and writes `sweep_summary.csv` and `sweep_summary.md` there: one row per job with its
overrides, evaluations, Pareto-front size, final hypervolume and reference values.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from nas.analysis.tables import Column, format_table, write_csv

log = logging.getLogger(__name__)

COLUMNS = (
    Column("job", "job"),
    Column("evaluations", "evaluations"),
    Column("pareto_size", "Pareto size"),
    Column("hypervolume", "hypervolume", ".4f"),
)


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job folder holding a search summary."""
    rows = []
    for summary_file in sorted(sweep_dir.glob("*/search/summary.json")) + sorted(sweep_dir.glob("*/summary.json")):
        job_dir = summary_file.parent.parent if summary_file.parent.name == "search" else summary_file.parent
        summary = json.loads(summary_file.read_text())
        rows.append(
            {
                "job": job_dir.name,
                "evaluations": summary.get("evaluations"),
                "pareto_size": summary.get("pareto_size"),
                "hypervolume": summary.get("hypervolume"),
                "reference": summary.get("reference"),
                "dir": str(job_dir),
            }
        )
    return rows


def write_sweep_summary(sweep_dir: str | Path) -> list[dict[str, Any]]:
    sweep_dir = Path(sweep_dir)
    rows = collect(sweep_dir)
    if not rows:
        log.warning("No job of the sweep in %s wrote a search summary; nothing to compare.", sweep_dir)
        return rows
    write_csv(rows, sweep_dir / "sweep_summary.csv")
    table = format_table(rows, COLUMNS)
    (sweep_dir / "sweep_summary.md").write_text(f"# Sweep {sweep_dir.name}\n\n```\n{table}\n```\n")
    log.info("Sweep summary (%s):\n%s", sweep_dir / "sweep_summary.md", table)
    return rows


class SweepSummary(Callback):
    """Writes the sweep summary when a multirun ends."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        write_sweep_summary(config.hydra.sweep.dir)
