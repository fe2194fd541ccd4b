"""`python -m nas.evaluate` (`nas-evaluate`): score one sub-network on lm-eval tasks, in place.

    python -m nas.evaluate model=smollm2_135m subnet=smallest task=arc_easy limit=200

The job is `nas.stages.evaluate.run_evaluation`; its settings are `conf/evaluate.yaml`."""

from __future__ import annotations

from nas.cli import hydra_main

main = hydra_main("evaluate", "nas.stages.evaluate:run_evaluation", "nas.evaluate")

if __name__ == "__main__":
    main()
