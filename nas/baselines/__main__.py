"""`python -m nas.baselines` (`nas-baselines`): pruning baselines scored like searched sub-networks.

    python -m nas.baselines 'baseline=[llm_pruner,slicegpt,wanda_2_4]' task=arc_easy limit=200
    python -m nas.baselines baseline=layer_drop 'ratio=[0.1,0.2,0.3]'

The job is `nas.stages.baselines.run_baselines`; its settings are `conf/baselines.yaml`.
"""

from __future__ import annotations

from nas.cli import hydra_main

main = hydra_main("baselines", "nas.stages.baselines:run_baselines", "nas.baselines")

if __name__ == "__main__":
    main()
