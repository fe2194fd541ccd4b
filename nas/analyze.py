"""`python -m nas.analyze run_dir=<run>`: regenerate every figure, table and the report of a finished search.

    python -m nas.analyze run_dir=multirun_outputs/search/nsga2-seed0
    python -m nas.analyze run_dir=multirun_outputs/pipeline/2025-01-01_12-00-00 analysis.size_fractions=[0.7]

Reads only the run directory (the study database, summary.json and the pipeline's quantized.json),
and writes report.md, a self-contained report.html, figures/*.png and the tables as CSV/JSON to
`out_dir` (default `<run_dir>/report/`).
"""

from __future__ import annotations

import logging
from typing import Any, cast

import hydra
from omegaconf import DictConfig, OmegaConf

from nas.analysis.report import analyze_run
from nas.analysis.run import EXPECTED, RunDirError
from nas.cli import CONFIG_DIR, exit_on_nas_error

log = logging.getLogger(__name__)


def run_analysis(cfg: DictConfig) -> dict[str, Any]:
    """The whole job; returns what `analyze_run` returns."""
    if OmegaConf.is_missing(cfg, "run_dir") or not cfg.run_dir:
        raise RunDirError(f"Say which run to analyse: python -m nas.analyze run_dir=<path>, with <path> {EXPECTED}.")
    options = cast(dict[str, Any], OmegaConf.to_container(cfg.analysis, resolve=True)) if cfg.get("analysis") else {}
    result = analyze_run(str(cfg.run_dir), cfg.get("out_dir"), **options)
    log.info("Report: %s (and %s)", result["report_html"], result["report_md"])
    return result


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="analyze")
def main(cfg: DictConfig) -> None:
    with exit_on_nas_error():
        run_analysis(cfg)


if __name__ == "__main__":
    main()
