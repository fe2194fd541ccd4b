"""`python -m nas.search`: multi-objective sub-network search (Optuna NSGA-II, LINAS, random).

    python -m nas.search                                  # NSGA-II, ARC-Easy acc_norm vs size, SmolLM2
    python -m nas.search search=linas search.n_trials=100 limit=100
    python -m nas.search objective=perplexity_vs_params search=random search.n_workers=2
    python -m nas.search model=pretrained model.name_or_path=multirun_outputs/train/<time>/supernet

Runs in `multirun_outputs/<name>/<study_name>/`; re-running the same command resumes the study there.
"""

from __future__ import annotations

from nas.cli import hydra_main

main = hydra_main("search", "nas.stages.search:run_search", "nas.search")

if __name__ == "__main__":
    main()
