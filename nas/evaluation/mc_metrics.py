"""Per-item multiple-choice metrics and their aggregation, as lm-eval 0.4.13 computes them.

`acc`: argmax of the summed continuation log-likelihoods. `acc_norm`: argmax of log-likelihood divided
by the choice's length in characters (lm-eval's `completion_len`, the `doc_to_choice` string without
the target delimiter). `mc2` (lm-eval's `acc` of truthfulqa_mc2): the normalised probability mass of
the true answers. Ties go to the first choice (`np.argmax`). Standard errors: sample standard deviation
over sqrt(n); for a task made of groups (MMLU subjects) the size-weighted mean with lm-eval's pooled
standard error.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from nas.errors import NASError
from nas.evaluation.prompts import Item

ItemMetric = Callable[[Sequence[float], Item], float]


def acc(lls: Sequence[float], item: Item) -> float:
    return 1.0 if int(np.argmax(lls)) == item.gold else 0.0


def acc_norm(lls: Sequence[float], item: Item) -> float:
    lengths = np.array([float(len(choice)) for choice in item.choices])
    return 1.0 if int(np.argmax(np.asarray(lls) / lengths)) == item.gold else 0.0


def mc2(lls: Sequence[float], item: Item) -> float:
    probs = np.exp(np.asarray(lls))
    probs = probs / np.sum(probs)
    return float(np.sum(probs[np.asarray(item.labels) == 1]))


ITEM_METRICS: dict[str, ItemMetric] = {"acc": acc, "acc_norm": acc_norm, "mc2": mc2}


def check_metrics(names: Sequence[str], primary: str) -> None:
    unknown = [n for n in names if n not in ITEM_METRICS]
    if unknown:
        raise NASError(f"Unknown metric(s) {unknown}; available: {sorted(ITEM_METRICS)}.")
    if primary not in names:
        raise NASError(f"The optimised metric {primary!r} is not among the task's metrics {list(names)}.")


def predictions(lls: Sequence[float], item: Item) -> dict[str, int]:
    """The chosen answer under `acc` and `acc_norm` (what item-for-item comparisons look at)."""
    lengths = np.array([float(len(choice)) for choice in item.choices])
    return {"pred": int(np.argmax(lls)), "pred_norm": int(np.argmax(np.asarray(lls) / lengths))}


def mean_stderr(values: Sequence[float]) -> float | None:
    """lm-eval's `mean_stderr`; None (lm-eval's "N/A") for fewer than two values."""
    n = len(values)
    if n < 2:
        return None
    mu = sum(values) / n
    return math.sqrt(sum((x - mu) ** 2 for x in values) / (n - 1)) / math.sqrt(n)


def pooled_stderr(stderrs: Sequence[float], sizes: Sequence[int]) -> float:
    """lm-eval's `pooled_sample_stderr` over the groups of a size-weighted mean."""
    pooled_var = sum((n - 1) * s**2 * n for n, s in zip(sizes, stderrs)) / (sum(sizes) - len(sizes))
    return math.sqrt(pooled_var / sum(sizes))


def aggregate(per_item: Mapping[str, Sequence[float]], groups: Sequence[str]) -> dict[str, float | None]:
    """Mean and stderr of every metric; items with different `groups` are pooled as lm-eval pools sub-tasks."""
    out: dict[str, float | None] = {}
    names = sorted(set(groups))
    for metric, values in per_item.items():
        out[metric] = float(np.mean(values)) if len(values) else float("nan")
        if len(names) <= 1:
            out[f"{metric}_stderr"] = mean_stderr(values)
            continue
        by_group = {g: [v for v, h in zip(values, groups) if h == g] for g in names}
        stderrs = [mean_stderr(by_group[g]) for g in names]
        if any(s is None for s in stderrs):
            out[f"{metric}_stderr"] = None
        else:
            out[f"{metric}_stderr"] = pooled_stderr(
                [s for s in stderrs if s is not None], [len(by_group[g]) for g in names]
            )
    return out
