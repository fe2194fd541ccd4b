"""`python -m nas.export model=... subnet=smallest|largest|random:<seed>|<path.json> out_dir=...`"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from nas.cli import CONFIG_DIR, exit_on_nas_error
from nas.export.standalone import export_sub_network
from nas.instantiate import instantiate
from nas.io.folders import check_output_folder
from nas.models.placement import torch_dtype
from nas.supernet.metrics import sub_network_cost
from nas.supernet.search_space import SearchSpace
from nas.supernet.selection import check_spec, select_sub_network

log = logging.getLogger(__name__)


def run_export(cfg: DictConfig, output_dir: str | Path) -> Path:
    """Export `cfg.subnet` of `cfg.model` and return the folder."""
    spec = check_spec(cfg.subnet)  # a typo fails before the model loads
    dtype = torch_dtype(cfg.dtype) if cfg.dtype else None
    out = Path(cfg.out_dir) if cfg.out_dir else Path(output_dir) / "export"
    overwrite = bool(cfg.get("overwrite", False))
    check_output_folder(out, overwrite)  # a folder we must not replace, or cannot write, fails now too
    model, tokenizer = instantiate(cfg.model)
    space = SearchSpace.from_config(cfg.search_space, model.config)
    sub = select_sub_network(spec, space)
    cost = sub_network_cost(model.shape, sub)
    metadata = {"selected_as": spec, "params": cost.params, "size_gb_fp16": cost.size_gb("fp16")}
    folder = export_sub_network(model, sub, out, tokenizer, dtype, metadata, overwrite)
    kind = json.loads((folder / "config.json").read_text())["architectures"][0]
    kind += "" if sub.is_uniform else " (load with trust_remote_code=True)"
    log.info("Exported %s: %s, %s params, as %s, to %s", spec, sub.describe(), f"{cost.params:,}", kind, folder)
    return folder


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="export")
def main(cfg: DictConfig) -> None:
    with exit_on_nas_error():
        run_export(cfg, HydraConfig.get().runtime.output_dir)


if __name__ == "__main__":
    main()
