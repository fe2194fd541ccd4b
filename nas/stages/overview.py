"""`python -m nas.overview`: load a model, summarise its search space, score sub-networks, export one.

Scores the full model, the space's largest and smallest sub-networks and `subnets.n_random` seeded
random ones by perplexity (WikiText-2 by default) with their size and FLOPs, prints a table, writes
`results.json` and `results.csv`, and exports `export.subnet` to `<run dir>/export/`. Everything
goes under the Hydra run directory, `multirun_outputs/<name>/<time>/`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from nas.analysis.tables import Column, format_table
from nas.errors import NASError
from nas.evaluation.perplexity import PerplexityResult
from nas.export.standalone import export_sub_network
from nas.instantiate import instantiate
from nas.io.atomic import write_csv, write_json
from nas.supernet.metrics import sub_network_cost
from nas.supernet.named import check_spec, select_sub_network
from nas.supernet.search_space import SearchSpace
from nas.supernet.subnetwork import SubNetwork

log = logging.getLogger(__name__)

# (model, tokenizer, desc) -> perplexity of the model's active sub-network, e.g. a `PerplexityEvaluator`.
PerplexityOf = Callable[..., PerplexityResult]


def cost_row(name: str, sub: SubNetwork, shape: Any, seq_len: int) -> dict[str, Any]:
    """The analytic columns of a result row (no forward pass)."""
    cost = sub_network_cost(shape, sub, seq_len)
    return {
        "name": name,
        "description": sub.describe(),
        "layers": sub.num_layers,
        "params": cost.params,
        "non_embedding_params": cost.non_embedding_params,
        "size_gb_fp16": cost.size_gb("fp16"),
        "gflops_per_token": cost.flops_per_token / 1e9,
    }


def score_sub_networks(
    model: Any, tokenizer: Any, named: Sequence[tuple[str, SubNetwork]], evaluator: PerplexityOf, seq_len: int
) -> list[dict[str, Any]]:
    """One row per (name, sub-network): cost at `seq_len` and perplexity of the live sub-network.

    A sub-network listed twice (e.g. `largest` when it is the full model) is evaluated once; the
    numbers are deterministic, so its later rows reuse the first result.
    """
    done: dict[SubNetwork, tuple[str, PerplexityResult, float]] = {}
    rows = []
    for name, sub in named:
        if sub in done:
            first, result, seconds = done[sub]
            log.info("%s is the same sub-network as %s; reusing its perplexity.", name, first)
        else:
            start = time.perf_counter()
            with model.sub_network(sub):
                result = evaluator(model, tokenizer, desc=name)
            seconds = time.perf_counter() - start
            done[sub] = (name, result, seconds)
            log.info("%-12s %s  perplexity %.3f  (%.1f s)", name, sub.describe(), result.perplexity, seconds)
        row = cost_row(name, sub, model.shape, seq_len)
        row.update(result.to_dict(), seconds=round(seconds, 2), subnetwork=sub.to_dict())
        rows.append(row)
    return rows


TABLE = (
    Column("name", "sub-network"),
    Column("description", "description"),
    Column("layers", "layers"),
    Column("params", "params", ","),
    Column("size_gb_fp16", "GB fp16", ".3f"),
    Column("gflops_per_token", "GFLOPs/tok", ".3f"),
    Column("perplexity", "perplexity", ".5g"),
)
# The cost columns an export's subnetwork.json records.
METRIC_KEYS = ("params", "non_embedding_params", "size_gb_fp16", "gflops_per_token")


def sub_network_specs(subnets: DictConfig) -> list[str]:
    """The named specs, then `random:<seed>` for `n_random` consecutive seeds; all checked for form."""
    if subnets.n_random < 0:
        raise NASError(f"subnets.n_random={subnets.n_random}: use 0 or more.")
    specs = [*subnets.names, *(f"random:{subnets.seed + i}" for i in range(subnets.n_random))]
    if not specs:
        raise NASError("Nothing to score: set subnets.names (e.g. [full,smallest]) or subnets.n_random > 0.")
    return [check_spec(s) for s in specs]


def export_metadata(
    spec: str, sub: SubNetwork, rows: list[dict[str, Any]], perplexity_setup: dict[str, Any], cost: dict[str, Any]
) -> dict[str, Any]:
    """What the export's `subnetwork.json` records: how it was chosen, its cost, and its perplexity if scored."""
    scored = next((r for r in rows if r["subnetwork"] == sub.to_dict()), None)
    metadata: dict[str, Any] = {"selected_as": spec, **{k: cost[k] for k in METRIC_KEYS}}
    if scored is not None:
        metadata["perplexity"] = {"value": scored["perplexity"], "tokens": scored["tokens"], **perplexity_setup}
    return metadata


def run_overview(cfg: DictConfig, output_dir: str | Path) -> dict[str, Any]:
    """The whole job; returns what it writes to `output_dir/results.json`."""
    output_dir = Path(output_dir)
    # Cheap checks first, so a typo fails before the model loads.
    specs = sub_network_specs(cfg.subnets)
    export_spec = check_spec(cfg.export.subnet) if cfg.export.subnet is not None else None
    evaluator = instantiate(cfg.perplexity)

    model, tokenizer = instantiate(cfg.model)
    space_cfg = cast(dict[str, Any], OmegaConf.to_container(cfg.search_space, resolve=True))
    space = SearchSpace.from_config(space_cfg, model.config)
    log.info("\n%s", space.summary())

    named = [(spec, select_sub_network(spec, space)) for spec in specs]
    log.info("Perplexity on %s (seq_len %d, max_tokens %s)", evaluator.path, evaluator.seq_len, evaluator.max_tokens)
    rows = score_sub_networks(model, tokenizer, named, evaluator, evaluator.seq_len)
    log.info("\n%s", format_table(rows, TABLE))
    full = next((r for r in rows if r["subnetwork"] == SubNetwork.full(model.shape).to_dict()), None)
    if full is not None and any(r["perplexity"] > 10 * full["perplexity"] for r in rows):
        log.info(
            "Sub-networks far worse than the full model are expected until it is trained as a super-network "
            "(LLaMA-NAS fine-tunes the full model and sampled sub-networks together first)."
        )

    results: dict[str, Any] = {
        "search_space": space.name,
        "space_size": space.size(),
        "perplexity": {"text": str(evaluator.path), "seq_len": evaluator.seq_len, "max_tokens": evaluator.max_tokens},
        "rows": rows,
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    write_csv(rows, output_dir / "results.csv")
    write_json(results, output_dir / "results.json")
    if export_spec is not None:
        sub = select_sub_network(export_spec, space)
        metadata = export_metadata(
            export_spec, sub, rows, results["perplexity"], cost_row(export_spec, sub, model.shape, evaluator.seq_len)
        )
        folder = export_sub_network(model, sub, output_dir / "export", tokenizer=tokenizer, metadata=metadata)
        log.info("Exported %s (%s) to %s", export_spec, sub.describe(), folder)
        results["export"] = {"subnet": export_spec, "subnetwork": sub.to_dict(), "dir": str(folder)}
        write_json(results, output_dir / "results.json")
    log.info("Results in %s", output_dir)
    return results
