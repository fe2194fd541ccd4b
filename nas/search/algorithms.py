"""The search algorithms of `conf/search/` (`search.sampler._target_`): each turns the search settings into a
seeded Optuna sampler. NSGA-II (LLaMA-NAS's settings), LINAS (NSGA-II on predictors) and random search."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from omegaconf import DictConfig
from optuna.samplers import BaseSampler, NSGAIISampler
from optuna.samplers.nsgaii import PolynomialMutation, SBXCrossover

from nas.search.constraints import Constraint
from nas.search.encoding import SearchEncoding
from nas.search.evolution import Operators
from nas.search.linas import LinasSampler
from nas.search.objectives import Objective
from nas.search.optuna_compat import experimental_features
from nas.search.random_draws import QuickRandomSampler
from nas.supernet.subnetwork import SubNetwork

Analytic = Callable[[SubNetwork], dict[str, float]]
OnRound = Callable[[dict[str, Any]], None]
AnalyticRows = Callable[[np.ndarray], dict[str, np.ndarray]]  # `Analytic` of many index rows at once


def operators(search: DictConfig) -> Operators:
    return Operators(
        crossover_prob=float(search.crossover_prob),
        crossover_eta=float(search.crossover_eta),
        mutation_prob=float(search.mutation_prob),
        mutation_eta=float(search.mutation_eta),
    )


class RandomSearch:
    """Uniform random sampling of the encoding: the baseline."""

    name = "random"
    uses_population = False
    # Its proposals are children the base sampler can be asked for again, free of side effects (`DistinctSampler`).
    redraws_taken_children = False

    def __call__(
        self,
        search: DictConfig,
        encoding: SearchEncoding,
        objectives: Sequence[Objective],
        analytic: Analytic,
        seed: int,
        on_round: OnRound | None = None,
        constraints: Sequence[Constraint] = (),
        analytic_rows: AnalyticRows | None = None,
    ) -> BaseSampler:
        return QuickRandomSampler(seed=seed)


class Nsga2(RandomSearch):
    """Optuna's NSGA-II: `population_size`, SBX crossover and polynomial mutation with their probabilities and etas.

    With constraints it ranks feasibility first (Deb): Optuna reads each trial's violations, which the worker
    records with `Trial.set_constraint`; a feasible trial dominates every infeasible one, infeasible ones rank
    by total violation."""

    name = "nsga2"
    uses_population = True
    redraws_taken_children = True

    def __call__(
        self,
        search: DictConfig,
        encoding: SearchEncoding,
        objectives: Sequence[Objective],
        analytic: Analytic,
        seed: int,
        on_round: OnRound | None = None,
        constraints: Sequence[Constraint] = (),
        analytic_rows: AnalyticRows | None = None,
    ) -> BaseSampler:
        ops = operators(search)
        with experimental_features():  # SBX crossover and polynomial mutation
            return NSGAIISampler(
                population_size=int(search.population_size),
                crossover=SBXCrossover(eta=ops.crossover_eta),
                crossover_prob=ops.crossover_prob,
                mutation=PolynomialMutation(eta=ops.mutation_eta),
                mutation_prob=ops.mutation_prob,
                seed=seed,
            )


class Linas(Nsga2):
    """LINAS: NSGA-II on performance predictors (`search.linas`), one population per round to real evaluation."""

    name = "linas"
    redraws_taken_children = False  # its rounds skip what was evaluated themselves (and plan with side effects)

    def __call__(
        self,
        search: DictConfig,
        encoding: SearchEncoding,
        objectives: Sequence[Objective],
        analytic: Analytic,
        seed: int,
        on_round: OnRound | None = None,
        constraints: Sequence[Constraint] = (),
        analytic_rows: AnalyticRows | None = None,
    ) -> BaseSampler:
        return LinasSampler(
            encoding,
            objectives,
            analytic,
            population_size=int(search.population_size),
            round_size=search.linas.get("round_size"),
            inner_population=int(search.linas.inner_population),
            generations=int(search.linas.generations),
            operators=operators(search),
            predictor=str(search.linas.predictor),
            seed=seed,
            on_round=on_round,
            constraints=constraints,
            analytic_rows=analytic_rows,
        )
