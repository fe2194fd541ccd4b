"""Objective values of a quantized sub-network: the same objectives as the search, measured on the quantized model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nas.evaluation.evaluator import Evaluator
from nas.evaluation.perplexity import PerplexityEvaluator
from nas.evaluation.speed import ThroughputMeter
from nas.quantization.quantize import QuantizedModel
from nas.search.objective_scorer import ObjectiveScorer
from nas.search.objectives import Objective


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
    scorer = ObjectiveScorer(
        quantized.model,
        quantized.tokenizer,
        objectives,
        evaluator,
        perplexity_evaluator,
        meter,
        seq_len,
        quantized.shape,
    )
    values, measured = scorer.measure(quantized.model, quantized.sub, footprint_gb=quantized.footprint_gb)
    if details is not None:
        details.update(
            measured | {"footprint_bytes": quantized.footprint_bytes, "quantization": quantized.config.method}
        )
    return values
