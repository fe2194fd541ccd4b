"""`python -m nas.export` (`nas-export`): one sub-network as a standalone Hugging Face model folder.

    python -m nas.export model=smollm2_135m subnet=smallest out_dir=exports/smallest
    python -m nas.export subnet=random:3 dtype=bfloat16 overwrite=true

The job is `nas.stages.export.run_export`; its settings are `conf/export.yaml`.
"""

from __future__ import annotations

from nas.cli import hydra_main

main = hydra_main("export", "nas.stages.export:run_export", "nas.export")

if __name__ == "__main__":
    main()
