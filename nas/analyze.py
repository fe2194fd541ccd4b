"""`python -m nas.analyze run_dir=<run>` (`nas-analyze`): regenerate the figures, tables and report of a finished search.

The job is `nas.stages.analyze.run_analysis`; its settings are `conf/analyze.yaml`."""

from __future__ import annotations

from nas.cli import hydra_main

main = hydra_main("analyze", "nas.stages.analyze:run_analysis", "nas.analyze")

if __name__ == "__main__":
    main()
