"""`python -m nas.search`: multi-objective sub-network search (Optuna NSGA-II, LINAS, random).

    python -m nas.search                                  # NSGA-II, ARC-Easy acc_norm vs size, SmolLM2
    python -m nas.search search=linas search.n_trials=100 limit=100
    python -m nas.search objective=perplexity_vs_params search=random search.n_workers=2
    python -m nas.search supernet=multirun_outputs/train/<time>/supernet   # a trained super-network

Runs in `multirun_outputs/<name>/<study_name>/`; re-running the same command resumes the study there.
"""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from nas.cli import CONFIG_DIR, exit_on_nas_error
from nas.search.runner import run_search


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="search")
def main(cfg: DictConfig) -> None:
    with exit_on_nas_error():
        run_search(cfg, HydraConfig.get().runtime.output_dir)


if __name__ == "__main__":
    main()
