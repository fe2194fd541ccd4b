"""The pipeline's quantization stage: every Pareto sub-network of a finished search, and the
unmodified model, quantized (`quantization.method`) and re-evaluated on the study's objectives.

Writes `quantized.json` (read by `nas.analysis`) after each model, so an interrupted stage resumes
where it stopped: a list of {"trial", "method", "values", "footprint_bytes", "details", ...}, the
unmodified model as trial "reference".

With `pareto_speed.enabled` (and no latency or throughput objective, whose values the search measured
already) it also times every one of these models with the `speed` meter (the quantized ones unless
`pareto_speed.quantized=false`), as LLaMA-NAS reports the
throughput of its Pareto sub-networks: the live sub-networks in `speed.json` ({"trial", "prefill_tokens_per_s",
"decode_tokens_per_s", ...}), the quantized ones in their `details`.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from nas.evaluation.speed import ThroughputMeter
from nas.instantiate import instantiate
from nas.io.atomic import read_json, write_json
from nas.quantization.config import QuantizationConfig
from nas.quantization.quantize import quantize_sub_network
from nas.search.context import SearchContext, prepare
from nas.search.outputs import pareto_front
from nas.supernet.subnetwork import SubNetwork

log = logging.getLogger(__name__)


def _speed(meter: ThroughputMeter, model: Any) -> dict[str, Any]:
    result = meter.measure(model)
    return {
        "prefill_tokens_per_s": result.prefill_tokens_per_s,
        "decode_tokens_per_s": result.decode_tokens_per_s,
        "speed": {k: v for k, v in result.to_dict().items() if k not in ("prefill_s", "decode_s")},
    }


def _described(values: dict[str, float], objectives: list[Any]) -> str:
    """The values for the log: a size objective of a quantized model is its measured footprint, whatever the
    objective's nominal dtype (`size_gb_fp16`), so it is labelled as such."""
    size = {o.name for o in objectives if o.kind == "size_gb"}
    return ", ".join(f"{'footprint_gb' if k in size else k}={v:.4g}" for k, v in values.items())


def measure_pareto_speed(
    ctx: SearchContext, meter: ThroughputMeter, todo: list[tuple[Any, SubNetwork]], path: Path
) -> int:
    """Time every (trial, sub-network) of `todo` live on the super-network into `path`, resumably."""
    entries: list[dict[str, Any]] = (
        read_json(path, "progress file", f"delete it to redo {path.stem}") if path.is_file() else []
    )
    done = {e["trial"] for e in entries}
    for trial, sub in tqdm(todo, desc="speed", disable=not ctx.cfg.search.progress):
        if trial in done:
            continue
        with ctx.model.sub_network(sub):
            measured = _speed(meter, ctx.model)
        entries.append({"trial": trial, "subnetwork": sub.to_dict(), **measured})
        write_json(entries, path)
        log.info(
            "Speed of %s: prefill %.0f tok/s, decode %.1f tok/s",
            trial,
            measured["prefill_tokens_per_s"],
            measured["decode_tokens_per_s"],
        )
    return len(entries)


def quantize_pareto_set(cfg: DictConfig, search_dir: Path, out_dir: Path) -> dict[str, Any]:
    """Quantize and score the Pareto set of the study in `search_dir` (and time it, see the module's
    docstring); returns a summary."""
    qcfg = QuantizationConfig.coerce(OmegaConf.to_container(cfg.quantization, resolve=True))  # type: ignore[arg-type]
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "quantized.json"
    timing = cfg.get("pareto_speed") or {}
    summary: dict[str, Any] = {"method": qcfg.method if qcfg.enabled else "none", "quantized": 0}
    if not (qcfg.enabled or timing.get("enabled")):
        write_json([], path)
        return summary
    ctx = prepare(cfg, search_dir)
    speed_searched = any(o.is_speed for o in ctx.objectives)  # the study holds it already
    meter: ThroughputMeter | None = instantiate(cfg.speed) if timing.get("enabled") and not speed_searched else None
    quantized_meter = meter if timing.get("quantized", True) else None
    front = pareto_front(ctx.study, ctx.objectives, ctx.encoding)
    todo: list[tuple[Any, SubNetwork]] = [("reference", SubNetwork.full(ctx.model.shape))]
    todo += [(row["number"], SubNetwork.from_dict(row["subnetwork"])) for row in front]
    if meter is not None:
        summary["speed_measured"] = measure_pareto_speed(ctx, meter, todo, out_dir / "speed.json")
    if not qcfg.enabled:
        write_json([], path)
        return summary
    scorer = ctx.scorer
    entries: list[dict[str, Any]] = (
        read_json(path, "progress file", f"delete it to redo {path.stem}") if path.is_file() else []
    )
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
        if quantized_meter is not None:
            details |= _speed(quantized_meter, quantized.model)
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
        write_json(entries, path)
        del quantized
        shutil.rmtree(work, ignore_errors=True)  # the unquantized export it was loaded from
        log.info("Quantized %s (%s): %s", trial, qcfg.method, _described(values, ctx.objectives))
    shutil.rmtree(out_dir / "work", ignore_errors=True)
    return summary | {"quantized": len(entries), "file": str(path)}
