"""The search algorithms of `conf/search/` as Optuna samplers: nsga2, linas and random."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from omegaconf import DictConfig
from optuna.samplers import BaseSampler, NSGAIISampler, RandomSampler
from optuna.samplers.nsgaii import PolynomialMutation, SBXCrossover

from nas.search.encoding import SearchEncoding
from nas.search.evolution import Operators
from nas.search.linas import LinasSampler
from nas.search.objectives import Objective
from nas.supernet.subnetwork import SubNetwork

ALGORITHMS = ("nsga2", "linas", "random")


def operators(search: DictConfig) -> Operators:
    return Operators(
        crossover_prob=float(search.crossover_prob),
        crossover_eta=float(search.crossover_eta),
        mutation_prob=float(search.mutation_prob),
        mutation_eta=float(search.mutation_eta),
    )


def make_sampler(
    search: DictConfig,
    encoding: SearchEncoding,
    objectives: Sequence[Objective],
    analytic: Callable[[SubNetwork], dict[str, float]],
    seed: int,
    on_round: Callable[[dict[str, Any]], None] | None = None,
) -> BaseSampler:
    """The sampler of `search.algorithm`, seeded."""
    if search.algorithm == "random":
        return RandomSampler(seed=seed)
    ops = operators(search)
    if search.algorithm == "nsga2":
        return NSGAIISampler(
            population_size=int(search.population_size),
            crossover=SBXCrossover(eta=ops.crossover_eta),
            crossover_prob=ops.crossover_prob,
            mutation=PolynomialMutation(eta=ops.mutation_eta),
            mutation_prob=ops.mutation_prob,
            seed=seed,
        )
    return LinasSampler(
        encoding,
        objectives,
        analytic,
        population_size=int(search.population_size),
        round_size=search.linas.get("round_size"),
        inner_population=int(search.linas.inner_population),
        generations=int(search.linas.generations),
        operators=ops,
        predictor=str(search.linas.predictor),
        seed=seed,
        on_round=on_round,
    )
