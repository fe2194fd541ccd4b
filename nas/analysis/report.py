"""`analyze_run`: every figure, table and the report of a finished search, from its run directory alone.

Writes to `out_dir` (default `<run_dir>/report/`):

    report.md, report.html    the report (the HTML page embeds its figures: one file to share)
    figures/*.png             Pareto fronts, architecture analysis, hypervolume, predictor quality
    selected.csv              the selected sub-networks (Tables 2 and 5)
    confirmed.csv             held-out confirmation: search vs confirmed scores, intervals, paired tests
    pareto_set.csv            the Pareto set with its quantized results
    analysis.json             every table's data, the figure paths and the notes
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from nas.analysis.confirmation import confirmation_section
from nas.analysis.document import Document, Heading, Text, to_html, to_markdown
from nas.analysis.options import AnalysisOptions
from nas.analysis.pareto_plots import pairs
from nas.analysis.progress import hypervolume_rows
from nas.analysis.run import RunData, load_run
from nas.analysis.sections import (
    architecture_section,
    baselines_section,
    overview,
    pareto_section,
    progress_section,
    selection_section,
)
from nas.io.atomic import write_csv, write_json, write_text

log = logging.getLogger(__name__)

REPORT_SUBDIR = "report"


def build_document(run: RunData, out_dir: Path, options: AnalysisOptions) -> tuple[Document, dict[str, Any]]:
    """The report and the data behind it; draws the figures into `out_dir/figures`."""
    figures_dir = out_dir / "figures"
    hv = hypervolume_rows(run)
    doc = Document(f"Search report: {run.study_name}")
    data: dict[str, Any] = {}
    for name, (blocks, section) in (
        ("overview", overview(run, hv)),
        ("pareto", pareto_section(run, figures_dir, options)),
        ("baselines", baselines_section(run)),
        (
            "confirmation",
            confirmation_section(
                run.confirmation, pairs(run.objectives), figures_dir, options.size_fractions, options.dpi
            ),
        ),
        ("selected", selection_section(run, options)),
        ("architecture", architecture_section(run, figures_dir, options)),
        ("progress", progress_section(run, hv, figures_dir, options)),
    ):
        doc.add(*blocks)
        data[name] = section
    if run.notes:
        doc.add(Heading("Notes"), Text(items=tuple(run.notes)))
    return doc, data


def _clean(value: Any) -> Any:
    """JSON-safe: NaN and infinities become null (strict JSON readers reject them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def analyze_run(run_dir: str | Path, out_dir: str | Path | None = None, **options: Any) -> dict[str, Any]:
    """Analyse the finished search in `run_dir` (a search run, or a pipeline run with `search/`).

    Args:
        run_dir: the run directory.
        out_dir: where to write; default `<run_dir>/report`.
        **options: `AnalysisOptions` fields (accuracy_tolerance, size_fractions, layer_percentiles, ...).

    Returns:
        What `analysis.json` holds: output paths, counts, the selected sub-networks and every table.

    Raises:
        NASError: the run directory holds no readable study, or an option is invalid.
    """
    opts = AnalysisOptions.from_mapping(options)
    run = load_run(run_dir, opts.study_name, opts.storage, opts.quantized_file)
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / REPORT_SUBDIR
    out.mkdir(parents=True, exist_ok=True)
    doc, data = build_document(run, out, opts)
    write_text(to_markdown(doc, out), out / "report.md")
    write_text(to_html(doc), out / "report.html")
    selected = [{"pair": pair} | r for pair, rows in data["selected"].items() for r in rows]
    write_csv(selected, out / "selected.csv")
    write_csv(data["pareto"]["pareto_set"], out / "pareto_set.csv")
    if data["confirmation"]:
        confirmed = [
            {"pair": pair, "table": table} | r
            for pair, d in data["confirmation"].items()
            for table in ("rows", "selections")
            for r in d[table]
        ]
        write_csv(confirmed, out / "confirmed.csv")
    result = {
        "run_dir": str(run_dir),
        "search_dir": str(run.search_dir),
        "study_name": run.study_name,
        "out_dir": str(out),
        "report_md": str(out / "report.md"),
        "report_html": str(out / "report.html"),
        "figures": [str(p) for p in doc.figures],
        "objectives": [o.to_dict() for o in run.objectives],
        "reference": run.reference,
        "evaluations": len(run.evaluations),
        "quantized_methods": run.quantized.methods,
        "selected": data["selected"],
        "baselines": data["baselines"],
        "confirmation": data["confirmation"],
        "pareto_set": data["pareto"]["pareto_set"],
        "architecture": data["architecture"],
        "progress": data["progress"],
        "notes": run.notes + data["architecture"].get("notes", []),
        "options": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(opts).items()},
    }
    result = _clean(result)
    write_json(result, out / "analysis.json")
    log.info(
        "Report of %s (%d evaluations, %d figures) in %s", run.study_name, len(run.evaluations), len(doc.figures), out
    )
    return result
