"""Objective values of a quantized sub-network: the same objectives as the search, measured on the quantized model."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from nas.evaluation.evaluator import Evaluator
from nas.evaluation.perplexity import PerplexityEvaluator, perplexity
from nas.evaluation.speed import SpeedResult, ThroughputMeter
from nas.quantization.quantize import QuantizedModel
from nas.search.objectives import Objective
from nas.search.scoring import ObjectiveScorer
from nas.supernet.metrics import sub_network_cost


def score_quantized(
    quantized: QuantizedModel,
    objectives: Sequence[Objective],
    evaluator: Evaluator | None = None,
    perplexity_evaluator: PerplexityEvaluator | None = None,
    meter: ThroughputMeter | None = None,
    seq_len: int = 128,
    details: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Objective name -> value for `quantized`, in the order of `objectives`.

    Accuracy, perplexity, latency and throughput are measured on the quantized model, exactly as
    `ObjectiveScorer` measures the live sub-network. `params` and `flops` are the unquantized
    sub-network's analytic counts (quantization changes bytes, not parameters or multiply-adds), and
    `size_gb` is the measured footprint (`QuantizedModel.footprint_gb`) whatever the objective's dtype.

    Args:
        quantized: from `quantize_sub_network` or `load_quantized`.
        objectives: what to measure (the study's objectives).
        evaluator, perplexity_evaluator, meter: as for `ObjectiveScorer`; each is needed only by the
            objectives that use it.
        seq_len: context length at which FLOPs per token are counted (as the search counted them).
        details: when given, filled with per-task metrics and measured speeds, as the scorer's details.
    """
    # The scorer checks that every objective has what it needs and tokenizes the perplexity text once.
    scorer = ObjectiveScorer(
        quantized.model, quantized.tokenizer, objectives, evaluator, perplexity_evaluator, meter, seq_len
    )
    model = quantized.model
    cost = sub_network_cost(quantized.shape, quantized.sub, seq_len)
    tasks = list(dict.fromkeys(t for o in objectives for t in o.tasks))
    results = evaluator.evaluate(model, tasks=tasks) if tasks and evaluator is not None else {}
    out: dict[str, Any] = {}
    for name, result in results.items():
        out.update({f"{name}.{k}": v for k, v in result.metrics.items() if v is not None})
    values: dict[str, float] = {}
    speed: SpeedResult | None = None
    for o in objectives:
        if o.kind == "params":
            values[o.name] = float(cost.params)
        elif o.kind == "flops":
            values[o.name] = float(cost.flops_per_token)
        elif o.kind == "size_gb":
            values[o.name] = quantized.footprint_gb
        elif o.kind == "accuracy":
            scores = [results[t].metrics[o.metric] if o.metric else results[t].score for t in o.tasks]
            values[o.name] = float(statistics.fmean(float(s) for s in scores if s is not None))
        elif o.kind == "perplexity":
            assert perplexity_evaluator is not None and scorer._tokens is not None
            p = perplexity_evaluator
            values[o.name] = perplexity(model, scorer._tokens, p.seq_len, p.batch_size, p.max_tokens, False).perplexity
        elif o.kind in ("latency", "throughput"):
            assert meter is not None
            speed = speed or meter.measure(model)
            values[o.name] = scorer._speed_value(o, speed)
            out.update(prefill_tokens_per_s=speed.prefill_tokens_per_s, decode_tokens_per_s=speed.decode_tokens_per_s)
        else:  # a kind added to nas.search.objectives but not here
            raise NotImplementedError(f"score_quantized does not know objective kind {o.kind!r}.")
    if details is not None:
        details.update(out | {"footprint_bytes": quantized.footprint_bytes, "quantization": quantized.config.method})
    return values
