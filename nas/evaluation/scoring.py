"""Score named sub-networks of one elastic model: analytic cost plus perplexity, one result row each."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from nas.evaluation.perplexity import PerplexityResult
from nas.supernet.metrics import sub_network_cost
from nas.supernet.subnetwork import SubNetwork

log = logging.getLogger(__name__)

# (model, tokenizer, desc) -> perplexity of the model's active sub-network, e.g. a `PerplexityEvaluator`.
Evaluator = Callable[..., PerplexityResult]


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
    model: Any, tokenizer: Any, named: Sequence[tuple[str, SubNetwork]], evaluator: Evaluator, seq_len: int
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
