"""The quick random draws are Optuna's: same seed, same values, for every distribution."""

from __future__ import annotations

import random

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.samplers import RandomSampler

from nas.search.random_draws import QuickRandomSampler

DISTRIBUTIONS = [
    IntDistribution(0, 0),
    IntDistribution(0, 1),
    IntDistribution(0, 5),
    IntDistribution(-3, 17),
    IntDistribution(2, 20, step=3),
    IntDistribution(1, 1000, log=True),
    FloatDistribution(0.0, 1.0),
    FloatDistribution(-2.0, 2.0, step=0.25),
    CategoricalDistribution(["a", "b", "c"]),
]


@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_the_quick_sampler_draws_what_optunas_random_sampler_draws_from_the_same_seed(seed: int) -> None:
    order = random.Random(seed)
    draws = [order.choice(DISTRIBUTIONS) for _ in range(5000)]  # the integer ones interleaved with the others
    optunas, quick = RandomSampler(seed=seed), QuickRandomSampler(seed=seed)
    expected = [optunas.sample_independent(None, None, f"p{i}", d) for i, d in enumerate(draws)]  # type: ignore[arg-type]
    got = [quick.sample_independent(None, None, f"p{i}", d) for i, d in enumerate(draws)]  # type: ignore[arg-type]
    assert got == expected
    assert [type(v) for v in got] == [type(v) for v in expected]
    # Every value of a small range is reached (the ends too: the half steps are drawn as Optuna draws them).
    assert {v for v, d in zip(got, draws) if d == IntDistribution(0, 5)} == set(range(6))
