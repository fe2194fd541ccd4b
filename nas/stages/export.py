"""Export jobs: `run_export` (`python -m nas.export`: one sub-network by name or file) and the pipeline's
export stage, `export_selected`: the sub-networks the report selected, as standalone models.

Each selected trial (`<run>/analyze/analysis.json`, e.g. "same accuracy, smallest") is written to
`<out>/trial_<n>/` in `export.dtype`, and, when `export.quantized` and a quantization method are set,
its quantized version to `<out>/trial_<n>_<method>/`. Without an analysis, the whole Pareto set is
exported. `exported.json` lists every folder with the selections that chose it.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from nas.errors import NASError
from nas.export.gguf import export_gguf
from nas.export.standalone import export_record, export_sub_network
from nas.instantiate import instantiate
from nas.io.atomic import write_json
from nas.io.folders import check_output_folder, publish_folder
from nas.models.placement import torch_dtype
from nas.quantization.config import QuantizationConfig
from nas.quantization.quantize import quantize_sub_network, save_quantized
from nas.search.context import prepare
from nas.search.outputs import pareto_front
from nas.search.trials import evaluations
from nas.stages.pick import gguf_pre_tokenizer
from nas.supernet.metrics import sub_network_cost
from nas.supernet.named import check_spec, select_sub_network
from nas.supernet.search_space import SearchSpace
from nas.supernet.subnetwork import EXPORT_RECORD, SubNetwork

log = logging.getLogger(__name__)


def selected_trials(run_dir: Path) -> dict[int, list[str]]:
    """Trial number -> the selections that picked it, from the analysis; {} when there is none."""
    analysis = run_dir / "analyze" / "analysis.json"
    if not analysis.is_file():
        return {}
    chosen: dict[int, list[str]] = {}
    data = json.loads(analysis.read_text())
    for pair, rows in data.get("selected", {}).items():
        for row in rows:
            if isinstance(row.get("trial"), int):
                chosen.setdefault(row["trial"], []).append(f"{pair}: {row['selection']}")
    # The selections made on held-out (confirmed) scores, when the pipeline confirmed the front.
    for pair, tables in (data.get("confirmation") or {}).items():
        for row in tables.get("selections", []):
            if isinstance(row.get("trial"), int):
                chosen.setdefault(row["trial"], []).append(f"{pair}: {row['selection']} (confirmed)")
    return chosen


def export_selected(
    cfg: DictConfig, run_dir: Path, out_dir: Path, base_model: DictConfig | None = None
) -> dict[str, Any]:
    """Export the selected sub-networks of the finished search in `run_dir/search`; returns the manifest.
    `base_model` is the pre-trained model's config (its GGUF tokenizer settings), `cfg.model` by default."""
    base_model = base_model if base_model is not None else cfg.model
    ctx = prepare(cfg, run_dir / "search")
    chosen = selected_trials(run_dir)
    if not chosen:
        log.warning("No analysis selections found; exporting the whole Pareto set.")
        chosen = {row["number"]: ["Pareto set"] for row in pareto_front(ctx.study, ctx.objectives, ctx.encoding)}
    by_number = {t.number: t for t in evaluations(ctx.study)}
    qcfg = QuantizationConfig.coerce(OmegaConf.to_container(cfg.quantization, resolve=True))  # type: ignore[arg-type]
    dtype = torch_dtype(str(cfg.export.dtype))
    manifest = []
    for number, reasons in sorted(chosen.items()):
        trial = by_number[number]
        sub = SubNetwork.from_json(trial.user_attrs["subnet_key"])
        values = {o.name: v for o, v in zip(ctx.objectives, trial.values)}
        metadata = {"trial": number, "selected_as": reasons, "values": values}
        # The stage folder is ours: an export left by an interrupted run of this stage is replaced.
        if cfg.export.get("format", "hf") == "gguf":
            gguf_cfg = OmegaConf.create({"gguf": OmegaConf.to_container(cfg.export.gguf), "model": base_model})
            folder = export_gguf_folder(
                gguf_cfg, ctx.model, ctx.tokenizer, sub, out_dir / f"trial_{number}", metadata, overwrite=True
            )
        else:
            folder = export_sub_network(
                ctx.model, sub, out_dir / f"trial_{number}", ctx.tokenizer, dtype, metadata, overwrite=True
            )
        entry: dict[str, Any] = {"trial": number, "selected_as": reasons, "folder": str(folder), "values": values}
        if cfg.export.quantized and qcfg.enabled and cfg.export.get("format", "hf") == "hf":
            work = out_dir / f"trial_{number}_{qcfg.method}.work"
            quantized = quantize_sub_network(ctx.model, sub, ctx.tokenizer, qcfg, work)
            assert quantized is not None
            saved = save_quantized(quantized, out_dir / f"trial_{number}_{qcfg.method}", overwrite=True)
            entry["quantized_folder"] = str(saved)
            del quantized
            shutil.rmtree(work, ignore_errors=True)
        manifest.append(entry)
        log.info("Exported trial %d (%s) to %s", number, "; ".join(reasons), folder)
    write_json(manifest, out_dir / "exported.json")
    return {"exported": manifest}


def export_gguf_folder(
    cfg: DictConfig, model: Any, tokenizer: Any, sub: SubNetwork, out: Path, metadata: dict[str, Any], overwrite: bool
) -> Path:
    """`sub` as a folder holding `model-<type>.gguf` and `subnetwork.json`, published whole like an export."""
    pre, note = gguf_pre_tokenizer(cfg, cfg.model)
    if note:
        log.warning(note)
    name = f"model-{cfg.gguf.type}.gguf"

    def write(folder: Path) -> None:
        export_gguf(model, sub, folder / name, tokenizer, str(cfg.gguf.type), pre)
        (folder / name).chmod(0o644)
        write_json(export_record(sub, metadata), folder / EXPORT_RECORD)

    return publish_folder(out, write, overwrite)


def run_export(cfg: DictConfig, output_dir: str | Path) -> Path:
    """Export `cfg.subnet` of `cfg.model` (a Hugging Face folder, or a GGUF file with `format=gguf`) and return
    the folder."""
    spec = check_spec(cfg.subnet)  # a typo fails before the model loads
    if cfg.get("format", "hf") not in ("hf", "gguf"):
        raise NASError(f"format={cfg.format!r} is not one of ['hf', 'gguf'].")
    dtype = torch_dtype(cfg.dtype) if cfg.dtype else None
    out = Path(cfg.out_dir) if cfg.out_dir else Path(output_dir) / "export"
    overwrite = bool(cfg.get("overwrite", False))
    check_output_folder(out, overwrite)  # a folder we must not replace, or cannot write, fails now too
    model, tokenizer = instantiate(cfg.model)
    space = SearchSpace.from_config(cfg.search_space, model.config)
    sub = select_sub_network(spec, space)
    cost = sub_network_cost(model.shape, sub)
    metadata = {"selected_as": spec, "params": cost.params, "size_gb_fp16": cost.size_gb("fp16")}
    if cfg.get("format", "hf") == "gguf":
        folder = export_gguf_folder(cfg, model, tokenizer, sub, out, metadata, overwrite)
        log.info(
            "Exported %s: %s, %s params, as GGUF (%s) to %s",
            spec,
            sub.describe(),
            f"{cost.params:,}",
            cfg.gguf.type,
            folder,
        )
        return folder
    folder = export_sub_network(model, sub, out, tokenizer, dtype, metadata, overwrite)
    kind = json.loads((folder / "config.json").read_text())["architectures"][0]
    kind += "" if sub.is_uniform else " (load with trust_remote_code=True)"
    log.info("Exported %s: %s, %s params, as %s, to %s", spec, sub.describe(), f"{cost.params:,}", kind, folder)
    return folder
