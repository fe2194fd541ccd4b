"""Reports on evaluated sub-networks: tables, figures, selections and the search report.

`nas.analysis.report.analyze_run(run_dir, out_dir=None, **options)` regenerates every figure, table and
the report of a finished search.
"""
