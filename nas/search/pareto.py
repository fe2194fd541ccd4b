"""Pareto fronts and hypervolume, normalised by the unmodified model (the reference point).

Each objective is divided by the reference model's value and turned into a loss (maximised ones
negated); the hypervolume is measured up to each objective's `hv_bound` (e.g. accuracy 0, size 1x the
model's). With two objectives it is the fraction of the unit box [0, 1] x [0, 1] that the front covers:
1.0 would be a sub-network as accurate as the model at zero size.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence

import numpy as np

from nas.search.objectives import Objective
from nas.search.optuna_compat import compute_hypervolume


def losses(values: np.ndarray, objectives: Sequence[Objective], reference: Mapping[str, float]) -> np.ndarray:
    """[n, k] values -> normalised losses (lower is better), value / reference, maximised ones negated."""
    scale = np.array([reference[o.name] or 1.0 for o in objectives], dtype=np.float64)
    sign = np.array([-1.0 if o.maximize else 1.0 for o in objectives])
    return sign * np.asarray(values, dtype=np.float64).reshape(-1, len(objectives)) / scale


def loss_bounds(objectives: Sequence[Objective]) -> np.ndarray:
    return np.array([-o.hv_bound if o.maximize else o.hv_bound for o in objectives], dtype=np.float64)


_CHUNK = 1024


def pareto_mask(loss: np.ndarray) -> np.ndarray:
    """True for rows no other row dominates (lower is better in every column). Duplicates all stay."""
    loss = np.asarray(loss, dtype=np.float64)
    if len(loss) == 0:
        return np.zeros(0, dtype=bool)
    dominated = np.zeros(len(loss), dtype=bool)
    for start in range(0, len(loss), _CHUNK):  # rows i in chunks: memory chunk x n, not n x n
        block = loss[start : start + _CHUNK, None, :]
        no_worse = (block <= loss[None, :, :]).all(-1)  # [i, j]: i no worse than j everywhere
        better = (block < loss[None, :, :]).any(-1)
        dominated |= (no_worse & better).any(0)
    return np.asarray(~dominated, dtype=bool)


def _dominates(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[len(a), len(b)]: whether row i of `a` dominates row j of `b` (no worse everywhere, better somewhere)."""
    a, b = a[:, None, :], b[None, :, :]
    return np.asarray((a <= b).all(-1) & (a < b).any(-1), dtype=bool)


def merge_into_front(front: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which rows of a front (rows none of which dominates another) and which new `rows` are non-dominated
    together, as two masks: `pareto_mask` of both stacked, in O(front x rows) instead of O((front + rows)^2). A
    search's progress merges each evaluation into its front so; its cost grows with the front, not its square."""
    front = np.asarray(front, dtype=np.float64).reshape(-1, rows.shape[1])
    rows = np.asarray(rows, dtype=np.float64)
    # A row dominated by a dominated row is dominated by whatever dominates that one: checking every row suffices.
    keep_front = ~_dominates(rows, front).any(axis=0)
    keep_rows = pareto_mask(rows) & ~_dominates(front, rows).any(axis=0)
    return np.asarray(keep_front, dtype=bool), np.asarray(keep_rows, dtype=bool)


def front_numbers(loss: np.ndarray) -> np.ndarray:
    """The non-dominated front of every row (0: no row dominates it; k: only rows of fronts < k do), lower loss
    better in every column: what peeling `pareto_mask` fronts one by one gives, in O(n log n) for two columns
    (Jensen 2003: rows sorted by the first loss; a row joins the first front holding no row as good in the
    second) and one dominance matrix otherwise (Deb et al. 2002), instead of a pass over every pair per front."""
    loss = np.asarray(loss, dtype=np.float64)
    n = len(loss)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if loss.shape[1] == 2 and not np.isnan(loss).any():
        return _front_numbers_2d(loss)
    if n > 4096:  # the matrix would be large: peel chunked masks (NaN rows are never dominated, as there)
        return _front_numbers_peeled(loss)
    dominates = np.zeros((n, n), dtype=bool)  # [i, j]: row i dominates row j
    for start in range(0, n, _CHUNK):
        block = loss[start : start + _CHUNK, None, :]
        dominates[start : start + _CHUNK] = (block <= loss[None, :, :]).all(-1) & (block < loss[None, :, :]).any(-1)
    dominators = dominates.sum(axis=0)
    numbers = np.full(n, -1, dtype=np.int64)
    front = 0
    while (numbers < 0).any():
        members = np.flatnonzero((dominators == 0) & (numbers < 0))
        numbers[members] = front
        dominators = dominators - dominates[members].sum(axis=0)
        front += 1
    return numbers


def _front_numbers_2d(loss: np.ndarray) -> np.ndarray:
    """Two columns: rows in (first, second) order; each earlier row that is not identical dominates a row
    exactly when its second loss is no greater, and the fronts' smallest second losses never decrease."""
    order = np.lexsort((loss[:, 1], loss[:, 0]))
    # Python floats in sorted order: indexing a numpy row element by element costs more than the sweep itself.
    rows = loss[order].tolist()
    fronts = [0] * len(rows)
    smallest: list[float] = []  # per front, its smallest second loss
    previous: list[float] | None = None
    front = 0
    for position, row in enumerate(rows):
        if row != previous:  # identical rows share their front (neither dominates the other)
            front = bisect.bisect_right(smallest, row[1])
            if front == len(smallest):
                smallest.append(row[1])
            else:
                smallest[front] = row[1]
            previous = row
        fronts[position] = front
    numbers = np.empty(len(loss), dtype=np.int64)
    numbers[order] = fronts
    return numbers


_MOST_PEELED = 4  # peels of about 20 us each (400 rows) before `front_numbers`' sweep (about 270 us) is cheaper


def leading_front_numbers(loss: np.ndarray, enough: int) -> np.ndarray:
    """`front_numbers` for the first fronts that hold `enough` rows together; every later row gets the number after
    theirs (the first front is always numbered). What a selection of `enough` rows needs: it never reaches past
    those fronts.

    With two columns (no NaN) the fronts are peeled one at a time on the rows sorted by (first, second loss), each in
    a few whole-array operations: LINAS's inner selections (200 of about 400 rows) usually need one front, where
    `front_numbers` numbers every row in a Python sweep. Past a few peels that sweep is cheaper, and takes over.
    """
    loss = np.asarray(loss, dtype=np.float64)
    if loss.ndim != 2 or loss.shape[1] != 2 or np.isnan(loss).any():
        return _capped(front_numbers(loss), enough)
    n = len(loss)
    order = np.lexsort((loss[:, 1], loss[:, 0]))
    first, second = loss[order, 0], loss[order, 1]
    # Identical rows share their front: one representative each (the first in sorted order), with its count.
    repeat = np.zeros(n, dtype=bool)
    repeat[1:] = (first[1:] == first[:-1]) & (second[1:] == second[:-1])
    representative = np.flatnonzero(~repeat)
    group_size = np.diff(np.append(representative, n))
    rep_second = second[representative]
    rep_number = np.empty(len(representative), dtype=np.int64)
    remaining = np.arange(len(representative))
    front, held = 0, 0
    while remaining.size and (front == 0 or held < enough):
        if front == _MOST_PEELED:  # many thin fronts: one sweep over every row costs less than more peels
            return _capped(front_numbers(loss), enough)
        # Sorted and distinct, an earlier row dominates a later one exactly when its second loss is no greater;
        # a later row never dominates an earlier one.
        values = rep_second[remaining]
        member = np.empty(len(values), dtype=bool)
        member[0] = True  # nothing before it (an infinite second loss too)
        member[1:] = values[1:] < np.minimum.accumulate(values[:-1])
        rep_number[remaining[member]] = front
        held += int(group_size[remaining[member]].sum())
        remaining = remaining[~member]
        front += 1
    rep_number[remaining] = front
    numbers = np.empty(n, dtype=np.int64)
    numbers[order] = rep_number[np.cumsum(~repeat) - 1]
    return numbers


def completing_front(numbers: np.ndarray, enough: int) -> int:
    """The front whose rows, with every earlier front's, first number `enough` (one past the last front when all
    of them hold fewer)."""
    return int(np.searchsorted(np.cumsum(np.bincount(numbers)), enough))


def _capped(numbers: np.ndarray, enough: int) -> np.ndarray:
    """Front numbers past the first fronts holding `enough` rows, merged into the number after theirs."""
    if not len(numbers):
        return numbers
    return np.minimum(numbers, completing_front(numbers, enough) + 1)


def _front_numbers_peeled(loss: np.ndarray) -> np.ndarray:
    numbers = np.full(len(loss), -1, dtype=np.int64)
    remaining = np.arange(len(loss))
    front = 0
    while remaining.size:
        mask = pareto_mask(loss[remaining])
        numbers[remaining[mask]] = front
        remaining = remaining[~mask]
        front += 1
    return numbers


def hypervolume(loss: np.ndarray, bounds: np.ndarray) -> float:
    """Volume dominated by `loss` rows and bounded by `bounds` (rows beyond a bound add nothing)."""
    loss = np.asarray(loss, dtype=np.float64).reshape(-1, len(bounds))
    inside = loss[(loss < bounds).all(axis=1)]
    return front_hypervolume(inside[pareto_mask(inside)], bounds)


def front_hypervolume(front: np.ndarray, bounds: np.ndarray) -> float:
    """`hypervolume` of rows none of which dominates another (a front, as `merge_into_front` keeps one), without
    looking for dominated rows again."""
    front = np.asarray(front, dtype=np.float64).reshape(-1, len(bounds))
    inside = front[(front < bounds).all(axis=1)]
    if len(inside) == 0:
        return 0.0
    unique = _unique_rows(inside)
    # Two columns: distinct non-dominated rows differ in the first, so Optuna's sort of them by it is the order of
    # `unique` and the sum is the same, without its look for dominated rows (a search's progress bar computes this
    # at every evaluation). With more columns, rows tied in the first could be summed in another order.
    return compute_hypervolume(unique, bounds.astype(np.float64), assume_pareto=len(bounds) == 2)


def _unique_rows(rows: np.ndarray) -> np.ndarray:
    """`np.unique(rows, axis=0)` of rows without NaN (distinct rows in lexicographic order); for two columns by one
    `lexsort`, a quarter of its time."""
    if rows.shape[1] != 2:
        return np.asarray(np.unique(rows, axis=0))
    ordered = rows[np.lexsort((rows[:, 1], rows[:, 0]))]
    distinct = np.ones(len(ordered), dtype=bool)
    distinct[1:] = (ordered[1:] != ordered[:-1]).any(axis=1)
    return ordered[distinct]


def hypervolume_history(loss: np.ndarray, bounds: np.ndarray) -> list[float]:
    """Hypervolume after each of the rows in order (e.g. real evaluations by completion time)."""
    history, front = [], np.zeros((0, len(bounds)))
    for row in np.asarray(loss, dtype=np.float64):
        front = np.vstack([front, row])
        front = front[pareto_mask(front)]
        history.append(hypervolume(front, bounds))
    return history
