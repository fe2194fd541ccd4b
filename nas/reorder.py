"""`python -m nas.reorder` (`nas-reorder`): reorder a model's neurons, heads and layers by importance.

The job is `nas.stages.reorder.run_reorder`; its settings are `conf/reorder.yaml`."""

from __future__ import annotations

from nas.cli import hydra_main

main = hydra_main("reorder", "nas.stages.reorder:run_reorder", "nas.reorder")

if __name__ == "__main__":
    main()
