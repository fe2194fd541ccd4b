"""A vectorised NSGA-II (Deb et al. 2002) over integer choice indices, for searching cheap predictors.

LINAS runs it on performance predictors for thousands of candidates per round, where Optuna's
per-trial bookkeeping would cost more than the predictors. Operators as in Deb's reference code:
binary tournament on (rank, crowding), SBX crossover and polynomial mutation on the continuous
relaxation of the indices, rounded back to the nearest index.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from nas.search.pareto import completing_front, front_numbers, leading_front_numbers


def non_dominated_ranks(loss: np.ndarray) -> np.ndarray:
    """Front number of each row (0 = non-dominated), lower loss better in every column."""
    return front_numbers(loss)


def crowding_distance(loss: np.ndarray) -> np.ndarray:
    """Deb's crowding distance of each row within its set (boundary rows infinite)."""
    return _crowding_within_fronts(loss, np.zeros(len(loss), dtype=np.int64), 1)


def select_survivors(loss: np.ndarray, count: int) -> np.ndarray:
    """Indices of the `count` best rows by (front, larger crowding distance)."""
    return ranked_survivors(loss, count)[0]


def ranked_survivors(loss: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """`select_survivors`, and the survivors' front numbers: those of the survivors among themselves too (every row
    that dominates a survivor is in an earlier, whole front), so the next generation's tournaments need not peel
    the fronts again."""
    # Only the first fronts that hold `count` rows together matter (LINAS picks 10 of 10,000 candidates): the later
    # rows share the next number, and no survivor comes from them.
    numbers = leading_front_numbers(loss, count)
    fronts = min(completing_front(numbers, count) + 1, int(numbers.max()) + 1) if count > 0 and len(numbers) else 0
    crowding = _crowding_within_fronts(loss, numbers, fronts)  # 0 past those fronts: no survivor comes from there
    chosen = np.lexsort((-crowding, numbers))[:count]
    return chosen, numbers[chosen]


def _crowding_within_fronts(loss: np.ndarray, ranks: np.ndarray, fronts: int) -> np.ndarray:
    """Deb's crowding distance of each row within its front (fronts of one or two rows: infinite), for the rows of
    fronts below `fronts` (0 for the rest), every front at once: one stable sort per column by (front, loss), ties in
    row order, instead of one sort per front and column."""
    crowding = np.zeros(len(loss))
    rows = np.flatnonzero(ranks < fronts)
    if not len(rows):
        return crowding
    front = ranks[rows]
    sizes = np.bincount(front, minlength=fronts)
    small = sizes[front] <= 2
    distance = np.zeros(len(rows))
    for j in range(loss.shape[1]):
        values = loss[rows, j]
        order = np.lexsort((values, front))  # by front, then by loss; ties in row order
        ordered_front, ordered = front[order], values[order]
        first = np.ones(len(order), dtype=bool)
        first[1:] = ordered_front[1:] != ordered_front[:-1]
        last = np.ones(len(order), dtype=bool)
        last[:-1] = first[1:]
        span = (ordered[last] - ordered[first])[np.cumsum(first) - 1]  # per row: its front's span in column j
        inner = ~first & ~last & (span > 0)
        at = np.flatnonzero(inner)
        gap = (ordered[at + 1] - ordered[at - 1]) / span[at]
        distance[order[first | last]] = np.inf
        distance[order[at]] += gap
    distance[small] = np.inf
    crowding[rows] = distance
    return crowding


@dataclass(frozen=True)
class Operators:
    """NSGA-II variation settings (LLaMA-NAS: crossover 0.9 / eta 15, mutation 0.02 / eta 20)."""

    crossover_prob: float = 0.9
    crossover_eta: float = 15.0
    mutation_prob: float = 0.02
    mutation_eta: float = 20.0


def _sbx(a: np.ndarray, b: np.ndarray, upper: np.ndarray, ops: Operators, rng: np.random.Generator) -> np.ndarray:
    """One child per pair by simulated binary crossover (bounded form), per variable with prob 0.5.

    Every random number is drawn for the whole matrix, in Deb's order; the arithmetic runs only on the
    variables that take the blend (crossed pair, differing parents, drawn to cross): often under half of them.
    They are gathered by flat position (the order a boolean index takes them in): a boolean index costs ten times
    more here, its random pattern defeating the branch predictor.
    """
    u = rng.random(a.shape)
    side_draw = rng.random(a.shape)
    swap = (rng.random(a.shape) < 0.5) & (np.abs(a - b) > 1e-12)  # |a - b| is max - min, exactly
    child = np.where(rng.random(a.shape) < 0.5, a, b)
    crossed = rng.random(len(a)) < ops.crossover_prob
    blend = np.flatnonzero(swap & crossed[:, None])
    first, second = a.take(blend), b.take(blend)
    low, high = np.minimum(first, second), np.maximum(first, second)
    u, side = u.take(blend), side_draw.take(blend) < 0.5
    top = upper.take(blend % a.shape[1])
    diff = np.maximum(high - low, 1e-12)
    beta = 1.0 + 2.0 * np.minimum(low, top - high) / diff
    alpha = 2.0 - beta ** -(ops.crossover_eta + 1.0)
    betaq = np.where(
        u <= 1.0 / alpha,
        (u * alpha) ** (1.0 / (ops.crossover_eta + 1.0)),
        (1.0 / np.maximum(2.0 - u * alpha, 1e-12)) ** (1.0 / (ops.crossover_eta + 1.0)),
    )
    np.put(child, blend, 0.5 * ((low + high) + np.where(side, -1.0, 1.0) * betaq * (high - low)))
    return np.where(crossed[:, None], child, a)


def _polynomial_mutation(x: np.ndarray, upper: np.ndarray, ops: Operators, rng: np.random.Generator) -> np.ndarray:
    """Deb's polynomial mutation; the arithmetic only on the variables drawn to mutate (2% by default), gathered
    by flat position as in `_sbx`."""
    u = rng.random(x.shape)
    mutate = np.flatnonzero((rng.random(x.shape) < ops.mutation_prob) & (upper > 0))
    top = upper.take(mutate % x.shape[1])
    value, u = x.take(mutate), u.take(mutate)
    span = np.maximum(top, 1e-12)
    delta1, delta2 = value / span, (top - value) / span
    power = 1.0 / (ops.mutation_eta + 1.0)
    low_side = u < 0.5
    xy = np.where(low_side, 1.0 - delta1, 1.0 - delta2)
    val = np.where(
        low_side,
        2.0 * u + (1.0 - 2.0 * u) * xy ** (ops.mutation_eta + 1.0),
        2.0 * (1.0 - u) + 2.0 * (u - 0.5) * xy ** (ops.mutation_eta + 1.0),
    )
    deltaq = np.where(low_side, val**power - 1.0, 1.0 - val**power)
    mutated = x.copy()
    np.put(mutated, mutate, value + deltaq * span)
    return mutated


def offspring(
    population: np.ndarray,
    loss: np.ndarray,
    upper: np.ndarray,
    ops: Operators,
    rng: np.random.Generator,
    ranks: np.ndarray | None = None,
) -> np.ndarray:
    """A new generation of integer index vectors from binary tournaments, SBX and mutation (`ranks`: the
    population's front numbers when known, e.g. from `ranked_survivors`)."""
    n = len(population)
    ranks = non_dominated_ranks(loss) if ranks is None else ranks
    crowd = crowding_distance(loss)

    def tournament() -> np.ndarray:
        i, j = rng.integers(0, n, size=(2, n))
        i_wins = (ranks[i] < ranks[j]) | ((ranks[i] == ranks[j]) & (crowd[i] >= crowd[j]))
        return np.where(i_wins, i, j)

    a, b = population[tournament()].astype(float), population[tournament()].astype(float)
    child = _polynomial_mutation(_sbx(a, b, upper, ops, rng), upper, ops, rng)
    return np.clip(np.rint(child), 0, upper).astype(np.int64)


def row_keys(rows: np.ndarray) -> list[bytes]:
    """Each row's bytes, as a hashable key, in one call (`row.tobytes()` per row costs ten times more)."""
    rows = np.ascontiguousarray(rows)
    if rows.ndim != 2 or rows.shape[1] == 0:
        return [row.tobytes() for row in rows]
    return rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel().tolist()


def mixed_radix(upper: np.ndarray) -> np.ndarray | None:
    """Place values that number every index row within [0, upper] by one int64 (`row_codes`); None where the space
    has more rows than an int64 can number."""
    place, values = 1, []
    for top in reversed([int(u) for u in upper]):
        values.append(place)
        place *= top + 1
    if place > np.iinfo(np.int64).max:
        return None
    return np.array(values[::-1], dtype=np.int64)


def row_codes(rows: np.ndarray, radix: np.ndarray) -> np.ndarray:
    """One int64 per index row (rows within [0, upper] of `mixed_radix(upper)`): equal rows, equal codes; distinct
    rows, distinct codes. On ten thousand rows at once, `np.unique` of them beats a dictionary of row bytes (on a
    few hundred new rows per generation it does not: `ScoredArchive` keeps the dictionary)."""
    return np.asarray(rows, dtype=np.int64) @ radix


class ScoredArchive:
    """Every distinct row seen, in order of first appearance, with its losses: each row scored once.

    A row's losses depend on that row alone (features, costs and libsvm's predictions are computed row by row),
    so a row seen again, e.g. a child equal to its parent, takes its stored losses; a third of an inner NSGA-II's
    children are such repeats. (The ridge predictor's BLAS product may round a row's last bit differently in
    another batch; keeping its first score gives each sub-network one prediction.) A row's position in the archive
    also identifies it, so distinct rows are distinct positions.
    """

    def __init__(self, losses_of: Callable[[np.ndarray], np.ndarray], width: int, capacity: int) -> None:
        self.losses_of = losses_of
        self.rows = np.empty((capacity, width), dtype=np.int64)
        self.loss = np.empty((capacity, 0))
        self.count = 0
        self._position: dict[bytes, int] = {}

    def add(self, rows: np.ndarray) -> np.ndarray:
        """The archive position of each row, scoring (and storing) the rows not seen before."""
        position = self._position
        positions: list[int] = []
        fresh: list[int] = []
        for i, key in enumerate(row_keys(rows)):
            at = position.get(key)
            if at is None:
                at = position[key] = self.count + len(fresh)
                fresh.append(i)
            positions.append(at)
        if fresh:
            new_loss = self.losses_of(rows[fresh])
            if self.loss.shape[1] != new_loss.shape[1]:  # the first rows tell how many losses there are
                self.loss = np.empty((len(self.rows), new_loss.shape[1]))
            end = self.count + len(fresh)
            self.rows[self.count : end] = rows[fresh]
            self.loss[self.count : end] = new_loss
            self.count = end
        return np.array(positions, dtype=np.int64)


def evolve(
    initial: np.ndarray,
    losses_of: Callable[[np.ndarray], np.ndarray],
    upper: np.ndarray,
    generations: int,
    ops: Operators,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Run NSGA-II from `initial`; returns every distinct candidate seen and its losses (`losses_of` is called
    once per distinct row: a row's losses must not depend on the other rows scored with it)."""
    population = initial.astype(np.int64)
    archive = ScoredArchive(losses_of, population.shape[1], len(population) * (generations + 1))
    positions = archive.add(population)
    loss = archive.loss[positions]
    ranks = None
    for _ in range(generations):
        children = offspring(population, loss, upper, ops, rng, ranks)
        merged = np.concatenate([positions, archive.add(children)])
        _, first = np.unique(merged, return_index=True)
        distinct = merged[np.sort(first)]  # elitism over distinct individuals, in order of first appearance
        keep, ranks = ranked_survivors(archive.loss[distinct], len(population))
        positions = distinct[keep]
        population, loss = archive.rows[positions], archive.loss[positions]
    return archive.rows[: archive.count].copy(), archive.loss[: archive.count].copy()
