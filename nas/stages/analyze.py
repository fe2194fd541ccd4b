"""The analyze jobs: `python -m nas.analyze run_dir=<run>` regenerates every figure, table and the report of a
finished search; `analyze_stage` is the same as the pipeline's stage (plus W&B).

    python -m nas.analyze run_dir=multirun_outputs/search/nsga2-seed0
    python -m nas.analyze run_dir=multirun_outputs/pipeline/2025-01-01_12-00-00 analysis.size_fractions=[0.7]

Reads only the run directory (the study database, summary.json and the pipeline's quantized.json),
and writes report.md, a self-contained report.html, figures/*.png and the tables as CSV/JSON to
`out_dir` (default `<run_dir>/report/`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from nas.analysis.report import analyze_run
from nas.analysis.run import EXPECTED, RunDirError
from nas.search.tracking import log_report

log = logging.getLogger(__name__)


def run_analysis(cfg: DictConfig, output_dir: str | Path | None = None) -> dict[str, Any]:
    """The `python -m nas.analyze` job (the report goes to `out_dir`, else `<run_dir>/report`, not to the
    job's own `output_dir`, which holds only Hydra's log); returns what `analyze_run` returns."""
    if OmegaConf.is_missing(cfg, "run_dir") or not cfg.run_dir:
        raise RunDirError(f"Say which run to analyse: python -m nas.analyze run_dir=<path>, with <path> {EXPECTED}.")
    options = cast(dict[str, Any], OmegaConf.to_container(cfg.analysis, resolve=True)) if cfg.get("analysis") else {}
    result = analyze_run(str(cfg.run_dir), cfg.get("out_dir"), **options)
    log.info("Report: %s (and %s)", result["report_html"], result["report_md"])
    return result


def analyze_stage(cfg: DictConfig, run_dir: Path, out_dir: Path) -> dict[str, Any]:
    """The pipeline's analyze stage: the report of the run in `run_dir` (with its quantized results when the
    quantize stage left them), written to `out_dir` and logged to W&B; returns the stage's record."""
    options = cast(dict[str, Any], OmegaConf.to_container(cfg.analysis, resolve=True)) if cfg.get("analysis") else {}
    quantized = run_dir / "quantize" / "quantized.json"
    if quantized.is_file():
        options.setdefault("quantized_file", str(quantized))
    result = analyze_run(run_dir, out_dir, **options)
    tables = {"pareto_set": result.get("pareto_set", [])}
    tables |= {f"selected/{pair}": rows for pair, rows in result.get("selected", {}).items()}
    tables |= {f"baselines/{pair}": rows for pair, rows in result.get("baselines", {}).items()}
    for pair, confirmed in (result.get("confirmation") or {}).items():
        tables |= {f"confirmed/{pair}": confirmed["rows"], f"confirmed_selections/{pair}": confirmed["selections"]}
    log_report(cfg, str(cfg.name), result.get("figures", []), tables)
    return {k: result[k] for k in ("report_html", "report_md", "evaluations", "selected") if k in result}
