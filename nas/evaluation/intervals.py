"""How sure a score is: 95% intervals of accuracies and paired comparisons of two models on the same items.

- One task with a right/wrong score per item (acc, acc_norm): the Wilson score interval of the proportion,
  and the exact McNemar test on the items the two models disagree on.
- A mean over several tasks, or a graded score per item (TruthfulQA's mc2): a percentile bootstrap over
  items, resampled within each task (the tasks are fixed, their items are the sample), and a paired
  bootstrap of the difference (both models resampled on the same items).

Every bootstrap is seeded, so the same inputs give the same interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import ArrayLike

Z95 = 1.959963984540054  # the standard normal's 97.5th percentile
RESAMPLES = 2000


@dataclass(frozen=True)
class Interval:
    """A score and its 95% interval over `n` items (`method`: wilson or bootstrap)."""

    value: float
    low: float
    high: float
    n: int
    method: str

    def to_dict(self) -> dict[str, float | int | str]:
        return asdict(self)

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


@dataclass(frozen=True)
class PairedComparison:
    """Model a minus model b on the same items: the difference of their scores, its 95% interval, and the
    two-sided p-value of "no difference" (`method`: mcnemar or paired_bootstrap). `a_only` / `b_only`: items
    only a / only b got right (one right/wrong task; 0 otherwise)."""

    difference: float
    low: float
    high: float
    p_value: float
    n: int
    method: str
    a_only: int = 0
    b_only: int = 0

    def to_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def is_binary(values: np.ndarray) -> bool:
    return bool(np.all((values == 0.0) | (values == 1.0)))


def wilson(successes: float, n: int, z: float = Z95) -> Interval:
    """The Wilson score interval of a proportion `successes / n` (better than the normal one near 0, 1 and
    for small n, where the normal interval leaves [0, 1])."""
    if n <= 0:
        raise ValueError("An interval needs at least one item.")
    p = successes / n
    denominator = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half), n, "wilson")


def _as_arrays(per_task: Sequence[ArrayLike]) -> list[np.ndarray]:
    arrays = [np.asarray(v, dtype=np.float64) for v in per_task]
    if not arrays or any(a.size == 0 for a in arrays):
        raise ValueError("Every task needs at least one item.")
    return arrays


def _resampled_means(arrays: Sequence[np.ndarray], resamples: int, seed: int) -> list[np.ndarray]:
    """Per model (`arrays[m]` is a task's items for model m, all the same length), the task mean under
    `resamples` bootstrap draws of the task's items, the same draws for every model (pairing)."""
    rng = np.random.default_rng(seed)
    n = arrays[0].size
    draws = rng.integers(0, n, size=(resamples, n))
    return [a[draws].mean(axis=1) for a in arrays]


def _bootstrap_means(per_model: Sequence[Sequence[np.ndarray]], resamples: int, seed: int) -> list[np.ndarray]:
    """Bootstrap draws of the mean over tasks for each model; task t's draws are paired across models."""
    tasks = len(per_model[0])
    totals = [np.zeros(resamples) for _ in per_model]
    for t in range(tasks):
        means = _resampled_means([model[t] for model in per_model], resamples, seed + 7919 * t)
        for total, m in zip(totals, means):
            total += m
    return [total / tasks for total in totals]


def score_interval(per_task: Sequence[ArrayLike], resamples: int = RESAMPLES, seed: int = 0) -> Interval:
    """The mean over tasks of each task's mean item score, with its 95% interval: Wilson for one task of
    right/wrong items, else a percentile bootstrap over items within each task."""
    arrays = _as_arrays(per_task)
    value = float(np.mean([a.mean() for a in arrays]))
    n = sum(a.size for a in arrays)
    if len(arrays) == 1 and is_binary(arrays[0]):
        return wilson(float(arrays[0].sum()), arrays[0].size)
    (draws,) = _bootstrap_means([arrays], resamples, seed)
    low, high = np.percentile(draws, [2.5, 97.5])
    return Interval(value, float(low), float(high), n, "bootstrap")


def mcnemar_p(a_only: int, b_only: int) -> float:
    """Exact two-sided McNemar p-value: under "no difference" each discordant item is a fair coin."""
    discordant = a_only + b_only
    if discordant == 0:
        return 1.0
    k = min(a_only, b_only)
    tail = sum(math.comb(discordant, i) for i in range(k + 1)) / 2.0**discordant
    return min(1.0, 2.0 * tail)


def compare(
    a: Sequence[ArrayLike], b: Sequence[ArrayLike], resamples: int = RESAMPLES, seed: int = 0
) -> PairedComparison:
    """Model a against model b scored on the same items (`a[t][i]` and `b[t][i]`: task t, item i).

    The difference's interval is the paired bootstrap's; the p-value is the exact McNemar test for one task
    of right/wrong items, else the paired bootstrap's (twice the smaller share of draws on either side of 0).
    """
    a_arrays, b_arrays = _as_arrays(a), _as_arrays(b)
    if [x.size for x in a_arrays] != [x.size for x in b_arrays]:
        raise ValueError("A paired comparison needs both models scored on the same items.")
    difference = float(np.mean([x.mean() - y.mean() for x, y in zip(a_arrays, b_arrays)]))
    n = sum(x.size for x in a_arrays)
    draws_a, draws_b = _bootstrap_means([a_arrays, b_arrays], resamples, seed)
    draws = draws_a - draws_b
    low, high = (float(v) for v in np.percentile(draws, [2.5, 97.5]))
    if len(a_arrays) == 1 and is_binary(a_arrays[0]) and is_binary(b_arrays[0]):
        x, y = a_arrays[0], b_arrays[0]
        a_only, b_only = int(np.sum((x == 1) & (y == 0))), int(np.sum((x == 0) & (y == 1)))
        return PairedComparison(difference, low, high, mcnemar_p(a_only, b_only), n, "mcnemar", a_only, b_only)
    # (count + 1) / (resamples + 1): a p-value a finite bootstrap can support, never exactly 0.
    below = (int(np.sum(draws <= 0)) + 1) / (resamples + 1)
    above = (int(np.sum(draws >= 0)) + 1) / (resamples + 1)
    return PairedComparison(difference, low, high, min(1.0, 2.0 * min(below, above)), n, "paired_bootstrap")
