"""The pipeline's quantization stage: every Pareto sub-network of a finished search, and the
unmodified model, quantized (`quantization.method`) and re-evaluated on the study's objectives.

Writes `quantized.json` (read by `nas.analysis`) after each model, so an interrupted stage resumes
where it stopped: a list of {"trial", "method", "values", "footprint_bytes", "details", ...}, the
unmodified model as trial "reference".
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from nas.quantization.config import QuantizationConfig
from nas.quantization.quantize import quantize_sub_network
from nas.search.outputs import pareto_front
from nas.search.runner import prepare
from nas.supernet.subnetwork import SubNetwork

log = logging.getLogger(__name__)


def _write(entries: list[dict[str, Any]], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(entries, indent=2) + "\n")
    tmp.replace(path)


def quantize_pareto_set(cfg: DictConfig, search_dir: Path, out_dir: Path) -> dict[str, Any]:
    """Quantize and score the Pareto set of the study in `search_dir`; returns a summary."""
    qcfg = QuantizationConfig.coerce(OmegaConf.to_container(cfg.quantization, resolve=True))  # type: ignore[arg-type]
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "quantized.json"
    if not qcfg.enabled:
        _write([], path)
        return {"method": "none", "quantized": 0}
    ctx = prepare(cfg, search_dir)
    scorer = ctx.scorer
    front = pareto_front(ctx.study, ctx.objectives, ctx.encoding)
    todo: list[tuple[Any, SubNetwork]] = [("reference", SubNetwork.full(ctx.model.shape))]
    todo += [(row["number"], SubNetwork.from_dict(row["subnetwork"])) for row in front]
    entries: list[dict[str, Any]] = json.loads(path.read_text()) if path.is_file() else []
    done = {(e["trial"], e["method"]) for e in entries}
    for trial, sub in tqdm(todo, desc=f"quantize {qcfg.method}", disable=not cfg.search.progress):
        if (trial, qcfg.method) in done:
            continue
        work = out_dir / "work" / str(trial)
        quantized = quantize_sub_network(ctx.model, sub, ctx.tokenizer, qcfg, work)
        assert quantized is not None
        # The study's own scorer: tasks already built, perplexity text already tokenised.
        values, details = scorer.measure(quantized.model, sub, footprint_gb=quantized.footprint_gb)
        details |= {"footprint_bytes": quantized.footprint_bytes, "quantization": qcfg.method}
        entries.append(
            {
                "trial": trial,
                "method": qcfg.method,
                "values": values,
                "footprint_bytes": quantized.footprint_bytes,
                "seconds": quantized.quantize_seconds,
                "subnetwork": sub.to_dict(),
                "details": details,
            }
        )
        _write(entries, path)
        del quantized
        shutil.rmtree(work, ignore_errors=True)  # the unquantized export it was loaded from
        log.info("Quantized %s (%s): %s", trial, qcfg.method, ", ".join(f"{k}={v:.4g}" for k, v in values.items()))
    shutil.rmtree(out_dir / "work", ignore_errors=True)
    return {"method": qcfg.method, "quantized": len(entries), "file": str(path)}
