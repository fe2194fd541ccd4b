"""`python -m nas.train` (console script `nas-train`): fine-tune a pre-trained LLM once as a super-network.

The job is `nas.stages.train.run_training`; its settings are `conf/train.yaml`."""

from __future__ import annotations

from nas.cli import hydra_main

main = hydra_main("train", "nas.stages.train:run_training", "nas.train")

if __name__ == "__main__":
    main()
