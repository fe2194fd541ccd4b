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

from nas.search.pareto import front_numbers


def non_dominated_fronts(loss: np.ndarray, enough: int | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """The fronts (row indices in ascending order; the first non-dominated, lower loss better in every column),
    and the rows left.

    With `enough`, only the first fronts that hold at least that many rows together are returned (callers that
    take the best `enough` rows never look further: LINAS picks 10 of 10,000 candidates); without, every row is
    in a front.
    """
    numbers = front_numbers(loss)
    fronts: list[np.ndarray] = []
    taken = 0
    for front in range(int(numbers.max()) + 1 if len(numbers) else 0):
        if enough is not None and taken >= enough:
            break
        members = np.flatnonzero(numbers == front)
        fronts.append(members)
        taken += len(members)
    remaining = np.flatnonzero(numbers >= len(fronts))
    return fronts, remaining


def non_dominated_ranks(loss: np.ndarray) -> np.ndarray:
    """Front number of each row (0 = non-dominated), lower loss better in every column."""
    return front_numbers(loss)


def crowding_distance(loss: np.ndarray) -> np.ndarray:
    """Deb's crowding distance of each row within its set (boundary rows infinite)."""
    n, k = loss.shape
    distance = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for j in range(k):
        order = np.argsort(loss[:, j], kind="stable")
        span = loss[order[-1], j] - loss[order[0], j]
        distance[order[[0, -1]]] = np.inf
        if span > 0:
            distance[order[1:-1]] += (loss[order[2:], j] - loss[order[:-2], j]) / span
    return distance


def select_survivors(loss: np.ndarray, count: int) -> np.ndarray:
    """Indices of the `count` best rows by (front, larger crowding distance)."""
    fronts, _ = non_dominated_fronts(loss, enough=count)
    ranks = np.full(len(loss), len(fronts), dtype=np.int64)  # the rows past `count` rank after every front
    crowding = np.zeros(len(loss))
    for front, members in enumerate(fronts):
        ranks[members] = front
        crowding[members] = crowding_distance(loss[members])
    order = np.lexsort((-crowding, ranks))
    return order[:count]


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
    """
    u = rng.random(a.shape)
    low, high = np.minimum(a, b), np.maximum(a, b)
    side = rng.random(a.shape) < 0.5
    swap = (rng.random(a.shape) < 0.5) & (high - low > 1e-12)
    child = np.where(rng.random(a.shape) < 0.5, a, b)
    crossed = rng.random(len(a)) < ops.crossover_prob
    blend = swap & crossed[:, None]
    u, low, high, side = u[blend], low[blend], high[blend], side[blend]
    top = np.broadcast_to(upper, a.shape)[blend]
    diff = np.maximum(high - low, 1e-12)
    beta = 1.0 + 2.0 * np.minimum(low, top - high) / diff
    alpha = 2.0 - beta ** -(ops.crossover_eta + 1.0)
    betaq = np.where(
        u <= 1.0 / alpha,
        (u * alpha) ** (1.0 / (ops.crossover_eta + 1.0)),
        (1.0 / np.maximum(2.0 - u * alpha, 1e-12)) ** (1.0 / (ops.crossover_eta + 1.0)),
    )
    child[blend] = 0.5 * ((low + high) + np.where(side, -1.0, 1.0) * betaq * (high - low))
    return np.where(crossed[:, None], child, a)


def _polynomial_mutation(x: np.ndarray, upper: np.ndarray, ops: Operators, rng: np.random.Generator) -> np.ndarray:
    """Deb's polynomial mutation; the arithmetic only on the variables drawn to mutate (2% by default)."""
    u = rng.random(x.shape)
    mutate = (rng.random(x.shape) < ops.mutation_prob) & (upper > 0)
    top = np.broadcast_to(upper, x.shape)[mutate]
    value, u = x[mutate], u[mutate]
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
    mutated[mutate] = value + deltaq * span
    return mutated


def offspring(
    population: np.ndarray, loss: np.ndarray, upper: np.ndarray, ops: Operators, rng: np.random.Generator
) -> np.ndarray:
    """A new generation of integer index vectors from binary tournaments, SBX and mutation."""
    n = len(population)
    ranks = non_dominated_ranks(loss)
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


def first_of_each(rows: np.ndarray) -> np.ndarray:
    """Ascending indices of the first occurrence of each distinct row (`np.unique(rows, axis=0,
    return_index=True)`, sorted; a dictionary of the rows' bytes is ten times faster for a few hundred rows)."""
    first: dict[bytes, int] = {}
    for i, key in enumerate(row_keys(rows)):
        first.setdefault(key, i)
    return np.fromiter(first.values(), dtype=np.int64, count=len(first))


def evolve(
    initial: np.ndarray,
    losses_of: Callable[[np.ndarray], np.ndarray],
    upper: np.ndarray,
    generations: int,
    ops: Operators,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Run NSGA-II from `initial`; returns every distinct candidate seen and its losses."""
    population = initial.astype(np.int64)
    loss = losses_of(population)
    seen: dict[bytes, int] = {}
    archive: list[np.ndarray] = []
    archive_loss: list[np.ndarray] = []

    def remember(rows: np.ndarray, rows_loss: np.ndarray) -> None:
        for i, key in enumerate(row_keys(rows)):
            if key not in seen:
                seen[key] = len(archive)
                archive.append(rows[i])
                archive_loss.append(rows_loss[i])

    remember(population, loss)
    for _ in range(generations):
        children = offspring(population, loss, upper, ops, rng)
        children_loss = losses_of(children)
        remember(children, children_loss)
        merged, merged_loss = np.vstack([population, children]), np.vstack([loss, children_loss])
        unique = first_of_each(merged)  # elitism over distinct individuals
        merged, merged_loss = merged[unique], merged_loss[unique]
        keep = select_survivors(merged_loss, len(population))
        population, loss = merged[keep], merged_loss[keep]
    return np.array(archive), np.array(archive_loss)
