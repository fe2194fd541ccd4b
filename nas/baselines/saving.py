"""Saving a pruned model as a folder `AutoModelForCausalLM.from_pretrained` loads, like a searched sub-network's export.

Sub-network baselines are exported exactly as sub-networks (`nas.export.standalone`); N:M-sparse models keep
the base architecture with zeros stored; SliceGPT models carry their two modeling files (`trust_remote_code`).
Every folder is written whole and renamed into place (`nas.io.folders`) and records the pruning in
`baseline.json`.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from nas.baselines.base import Pruned
from nas.export.standalone import REMOTE_CODE_DIR, export_sub_network
from nas.io.atomic import write_json
from nas.io.folders import publish_folder

RECORD = "baseline.json"
SLICED_CODE = ("configuration_nas_sliced.py", "modeling_nas_sliced.py")


def save_pruned(pruned: Pruned, tokenizer: Any, out_dir: Path, overwrite: bool = True) -> Path:
    """Write `pruned` to `out_dir` (an earlier save of ours there is replaced)."""
    record = {"baseline": pruned.summary()}
    if pruned.sub is not None:
        folder = export_sub_network(pruned.model, pruned.sub, out_dir, tokenizer, overwrite=overwrite, metadata=record)
        return folder

    def write(folder: Path) -> None:
        pruned.model.save_pretrained(folder)
        if getattr(pruned.model.config, "auto_map", None):
            for name in SLICED_CODE:
                shutil.copy(REMOTE_CODE_DIR / name, folder / name)
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)
        write_json(record, folder / RECORD)

    return publish_folder(out_dir, write, overwrite)
