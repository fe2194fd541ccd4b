"""`python -m nas.pipeline` (`nas-pipeline`): one command from a pre-trained model to a Pareto report.

    python -m nas.pipeline experiments=quickstart      # make quickstart

The stages and their records are `nas.stages.pipeline`; the settings are `conf/pipeline.yaml`."""

from __future__ import annotations

from nas.cli import hydra_main

main = hydra_main("pipeline", "nas.stages.pipeline:run_pipeline", "nas.pipeline")

if __name__ == "__main__":
    main()
