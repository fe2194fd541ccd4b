"""`python -m nas.overview` (`nas-overview`): a model's search space, named sub-networks scored, one exported.

The job is `nas.stages.overview.run_overview`; its settings are `conf/overview.yaml`."""

from __future__ import annotations

from nas.cli import hydra_main

main = hydra_main("overview", "nas.stages.overview:run_overview", "nas.overview")

if __name__ == "__main__":
    main()
