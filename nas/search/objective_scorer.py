"""Scores a sub-network on every objective of a study, on the live super-network (no reload, no copy)."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import torch

from nas.evaluation.evaluator import Evaluator
from nas.evaluation.perplexity import PerplexityEvaluator, perplexity, tokenize
from nas.evaluation.results import TaskResult
from nas.evaluation.speed import ThroughputMeter
from nas.search.encoded_rows import EncodedRows
from nas.search.objectives import Objective
from nas.supernet.metrics import sub_network_cost
from nas.supernet.subnetwork import ModelShape, SubNetwork


class CostCounts(Protocol):
    """The counts the analytic objectives read: a `SubNetworkCost`, many sub-networks' `RowCosts`, a pruned model."""

    @property
    def params(self) -> Any: ...

    @property
    def size_bytes(self) -> Mapping[str, Any]: ...

    @property
    def flops_per_token(self) -> Any: ...


def accuracy_value(objective: Objective, results: Mapping[str, TaskResult]) -> float:
    """An accuracy objective's value: the mean over its tasks of each task's metric (its own, or `objective.metric`)."""
    scores = [results[t].metrics[objective.metric] if objective.metric else results[t].score for t in objective.tasks]
    return float(statistics.fmean(float(s) for s in scores if s is not None))


class ObjectiveScorer:
    """Objective values of sub-networks of one loaded model.

    Args:
        model: the elastic super-network.
        tokenizer: its tokenizer.
        objectives: what to measure.
        evaluator: the task evaluator (built once; needed by accuracy objectives).
        perplexity_evaluator: the text and settings of perplexity objectives.
        meter: the speed meter of latency and throughput objectives.
        seq_len: context length at which FLOPs per token are counted.
        shape: the super-network's shape, for the analytic costs (default: `model.shape`).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        objectives: Sequence[Objective],
        evaluator: Evaluator | None = None,
        perplexity_evaluator: PerplexityEvaluator | None = None,
        meter: ThroughputMeter | None = None,
        seq_len: int = 128,
        shape: ModelShape | None = None,
    ) -> None:
        kinds = {o.kind for o in objectives}
        missing = [
            what
            for what, needed, have in (
                ("an evaluator (tasks)", "accuracy" in kinds, evaluator),
                ("a perplexity config", "perplexity" in kinds, perplexity_evaluator),
                ("a speed meter (speed config)", any(o.is_speed for o in objectives), meter),
            )
            if needed and have is None
        ]
        if missing:
            raise ValueError(
                f"ObjectiveScorer needs {', '.join(missing)} for objectives {[o.name for o in objectives]}."
            )
        self.model = model
        self.shape = shape if shape is not None else model.shape
        self.tokenizer = tokenizer
        self.objectives = list(objectives)
        self.evaluator = evaluator
        self.perplexity_evaluator = perplexity_evaluator
        self.meter = meter
        self.seq_len = seq_len
        self._tokens: torch.Tensor | None = None
        if perplexity_evaluator is not None and "perplexity" in kinds:
            self._tokens = tokenize(tokenizer, perplexity_evaluator.text)  # once per process, not per trial

    def full(self) -> SubNetwork:
        return SubNetwork.full(self.shape)

    def analytic(self, sub: SubNetwork) -> dict[str, float]:
        """Values of the objectives that need no forward pass (parameters, size, FLOPs)."""
        cost = sub_network_cost(self.shape, sub, self.seq_len)
        return self.cost_values(cost)

    def cost_values(self, cost: CostCounts) -> dict[str, Any]:
        """The analytic objectives (parameters, size per dtype, FLOPs) from a model's counts (numbers, or arrays
        of many sub-networks' counts: `analytic_rows`); only the counts an objective needs are read."""
        out: dict[str, Any] = {}
        for o in self.objectives:
            if o.kind == "params":
                out[o.name] = cost.params * 1.0  # a float, or a float array
            elif o.kind == "size_gb":
                out[o.name] = cost.size_bytes[o.dtype] / 1e9
            elif o.kind == "flops":
                out[o.name] = cost.flops_per_token * 1.0
        return out

    def analytic_rows(self, encoded: EncodedRows, rows: np.ndarray) -> dict[str, np.ndarray]:
        """`analytic` of many sub-networks given as index rows, computed on the whole matrix at once."""
        cost = encoded.costs(rows, self.seq_len)
        return self.cost_values(cost)

    def __call__(self, sub: SubNetwork | None) -> tuple[dict[str, float], dict[str, Any]]:
        """(objective values, details) of `sub` on the live super-network, or of the unmodified model
        when `sub` is None."""
        sub = sub or self.full()
        with self.model.sub_network(sub):
            return self.measure(self.model, sub)

    def measure(
        self, model: Any, sub: SubNetwork, footprint_gb: float | None = None
    ) -> tuple[dict[str, float], dict[str, Any]]:
        """(objective values, details) of `model` computing `sub`: the live super-network, or a
        standalone copy of the sub-network (e.g. quantized, whose measured `footprint_gb` then replaces
        the analytic size; parameters and FLOPs stay the sub-network's analytic counts)."""
        values = self.analytic(sub)
        if footprint_gb is not None:
            values |= {o.name: footprint_gb for o in self.objectives if o.kind == "size_gb"}
        return self.measure_with(model, values)

    def measure_with(self, model: Any, analytic: dict[str, float]) -> tuple[dict[str, float], dict[str, Any]]:
        """(objective values, details) of any model (a pruning baseline, say): the analytic objectives
        (params, size_gb, flops) taken from `analytic`, the others measured on `model` as it is."""
        values = dict(analytic)
        details: dict[str, Any] = {}
        tasks = list(dict.fromkeys(t for o in self.objectives for t in o.tasks))
        results = self.evaluator.evaluate(model, tasks=tasks) if tasks and self.evaluator else {}
        for name, result in results.items():
            details.update({f"{name}.{k}": v for k, v in result.metrics.items() if v is not None})
            details[f"{name}.n"] = result.num_items  # for the score's interval in reports
            details[f"{name}.score"] = result.score  # the task's optimised metric, whatever lm-eval names it
            details[f"{name}.proportion"] = result.proportion  # right/wrong items: a Wilson interval applies
        speed = None
        for o in self.objectives:
            if o.kind == "accuracy":
                values[o.name] = accuracy_value(o, results)
            elif o.kind == "perplexity":
                assert self.perplexity_evaluator is not None and self._tokens is not None
                p = self.perplexity_evaluator
                values[o.name] = perplexity(
                    model, self._tokens, p.seq_len, p.batch_size, p.max_tokens, False
                ).perplexity
            elif o.is_speed:
                assert self.meter is not None
                speed = speed or self.meter.measure(model)
                values[o.name] = self._speed_value(o, speed)
                details.update(
                    prefill_tokens_per_s=speed.prefill_tokens_per_s, decode_tokens_per_s=speed.decode_tokens_per_s
                )
        return {o.name: values[o.name] for o in self.objectives}, details

    def speed_values(self, sub: SubNetwork, speed_quantities: Sequence[Objective]) -> dict[str, float]:
        """Latency / throughput values of `sub` on the live super-network, timed once (no task evaluation)."""
        if self.meter is None:
            raise ValueError("speed_values needs a speed meter (the speed config).")
        with self.model.sub_network(sub):
            speed = self.meter.measure(self.model)
        return {o.name: self._speed_value(o, speed) for o in speed_quantities}

    def _speed_value(self, objective: Objective, speed: Any) -> float:
        assert self.meter is not None
        tokens_per_s = speed.prefill_tokens_per_s if objective.mode == "prefill" else speed.decode_tokens_per_s
        if objective.kind == "throughput":
            return float(tokens_per_s)
        # Latency of one forward: a prefill batch, or one decode step of the whole batch.
        tokens_per_forward = self.meter.batch_size * (self.meter.prompt_len if objective.mode == "prefill" else 1)
        return 1000.0 * tokens_per_forward / float(tokens_per_s)
