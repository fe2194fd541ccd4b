"""`python -m nas.pick` (`nas-pick`): the best sub-network of a finished search within a budget, exported for
deployment (Hugging Face folder, quantized folder or GGUF file) with its model card.

    python -m nas.pick run_dir=multirun_outputs/quickstart/run 'budget={size_gb: 0.2, latency_ms: 30}' metric=mean
    python -m nas.pick run_dir=... budget.size_gb=0.15 format=gguf gguf.type=q8_0

The job is `nas.stages.pick.run_pick`; its settings are `conf/pick.yaml`."""

from __future__ import annotations

from nas.cli import hydra_main

main = hydra_main("pick", "nas.stages.pick:run_pick", "nas.pick")

if __name__ == "__main__":
    main()
