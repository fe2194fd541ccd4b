"""95% intervals of the scores a search measured, from what each evaluation recorded (per task: the metric's
value and, since the search records them, the number of items and whether each item was right or wrong): Wilson
for one task of right/wrong items, the normal approximation of a mean of independent proportions for several
tasks. None where the count is unknown (a study from before items were counted) or the metric is not a
proportion (TruthfulQA MC2's graded score, a perplexity)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import cache
from typing import Any

from nas.evaluation.intervals import Z95, wilson
from nas.evaluation.registry import task_config
from nas.search.objectives import Objective


@cache
def _task_metric(task: str) -> str | None:
    metric = task_config(task).get("metric")
    return None if metric is None else str(metric)


def _value(details: Mapping[str, Any], task: str, metric: str | None) -> Any:
    """The task's value under `metric`; its optimised metric's (`<task>.score`) when no metric is named."""
    if metric is None:
        return details.get(f"{task}.score")
    return details.get(f"{task}.{metric}")


def search_interval(objective: Objective, details: Mapping[str, Any]) -> tuple[float, float] | None:
    """(low, high) of an accuracy objective's value as measured on `details`' items; None when unknown."""
    if objective.kind != "accuracy":
        return None
    parts = []
    for task in objective.tasks:
        metric = objective.metric or (None if f"{task}.score" in details else _task_metric(task))
        value, n = _value(details, task, metric), details.get(f"{task}.n")
        graded = details.get(f"{task}.proportion") is False or metric == "mc2"  # mc2: a study from before lm-eval names
        if value is None or not n or graded:
            return None
        parts.append((float(value), int(n)))
    if len(parts) == 1:
        p, n = parts[0]
        interval = wilson(p * n, n)
        return interval.low, interval.high
    mean = sum(p for p, _ in parts) / len(parts)
    half = Z95 * math.sqrt(sum(p * (1 - p) / n for p, n in parts)) / len(parts)
    return max(0.0, mean - half), min(1.0, mean + half)


def shown_interval(objective: Objective, details: Mapping[str, Any]) -> str | None:
    """`[low, high]` in percent, for a table cell; None when unknown."""
    interval = search_interval(objective, details)
    return None if interval is None else f"[{interval[0] * 100:.1f}, {interval[1] * 100:.1f}]"
