"""Reports on evaluated sub-networks: tables, CSV/JSON files, figures and the search report.

`analyze_run(run_dir, out_dir=None, **options)` (in `nas.analysis.report`) regenerates every figure,
table and the report of a finished search; it is imported lazily here so that `nas.analysis.tables`
stays light (the search imports it) and free of import cycles.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "analyze_run":
        from nas.analysis.report import analyze_run

        return analyze_run
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["analyze_run"]
