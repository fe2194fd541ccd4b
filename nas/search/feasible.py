"""Proposals that meet the analytic constraints: a wrapper around any search algorithm's sampler.

Size, parameter and FLOP budgets are known from a sub-network's shape alone, so a proposal that breaks
one is redrawn in memory instead of becoming a trial (no storage rows, no evaluation): the algorithm's
own proposal is asked again (NSGA-II: another child of the same parents), and uniform draws of the
random phases (random search, the first populations of NSGA-II and LINAS) are drawn from the feasible
sub-networks only. Candidates an algorithm enqueued itself (LINAS's rounds, which rank predicted
feasibility themselves) pass through. A proposal still infeasible after `max_draws` tries is evaluated
and recorded as infeasible, never picked.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial

from nas.search.encoding import SearchEncoding
from nas.search.wrapping_sampler import WrappingSampler
from nas.supernet.subnetwork import SubNetwork

log = logging.getLogger(__name__)


class FeasibleSampler(WrappingSampler):
    """`base`'s proposals, redrawn until `feasible(sub_network)` holds (at most `max_draws` times).

    Args:
        base: the algorithm's sampler.
        encoding: the search space's encoding (every trial suggests all of its parameters).
        feasible: whether a sub-network meets the analytic constraints.
        seed: seeds the uniform draws.
        max_draws: proposals tried per trial before an infeasible one is let through.
        redraw_relative: ask the base again when its own proposal is infeasible (False for samplers whose
            proposals have side effects, like LINAS planning a round; they rank feasibility themselves).
    """

    def __init__(
        self,
        base: BaseSampler,
        encoding: SearchEncoding,
        feasible: Callable[[SubNetwork], bool],
        seed: int | None = None,
        max_draws: int = 1000,
        redraw_relative: bool = True,
    ) -> None:
        super().__init__(base, encoding)
        self.feasible = feasible
        self.rng = np.random.default_rng(seed)
        self.max_draws = max_draws
        self.redraw_relative = redraw_relative
        self.upper = np.array([len(c) - 1 for c in encoding.choices.values()], dtype=np.int64)
        self.redrawn = 0  # proposals replaced because they broke a constraint (for logs and tests)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()
        self.rng = np.random.default_rng()

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        # Every parameter is drawn jointly here (feasibility is a joint property); the base sees the same space.
        # One-choice parameters are left to independent sampling, as Optuna's samplers leave them.
        return {name: d for name, d in self.encoding.distributions().items() if not d.single()}

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if "fixed_params" in trial.system_attrs:  # enqueued: an escape or a LINAS candidate, taken as it is
            return {}
        params: dict[str, int] = {}
        for _ in range(self.max_draws):
            proposal = self.base.sample_relative(study, trial, search_space)
            if not proposal:  # a random phase: draw uniformly among the feasible sub-networks
                return self._uniform_feasible(search_space)
            params = self._complete(proposal, search_space)
            if not self.redraw_relative or self._feasible(params):
                return params
            self.redrawn += 1
        log.warning(
            "No proposal met the analytic constraints in %d tries; trial %d is evaluated and recorded as infeasible.",
            self.max_draws,
            trial.number,
        )
        return params

    def _feasible(self, params: dict[str, int]) -> bool:
        return self.feasible(self.decode(params))

    def _complete(self, proposal: dict[str, Any], space: dict[str, BaseDistribution]) -> dict[str, int]:
        """The base's joint proposal, with the parameters it leaves to independent (uniform) sampling drawn here."""
        row = self.rng.integers(0, self.upper + 1)
        return {name: int(proposal.get(name, row[i])) for i, name in enumerate(self.encoding.names) if name in space}

    def _uniform_feasible(self, space: dict[str, BaseDistribution]) -> dict[str, int]:
        params: dict[str, int] = {}
        for _ in range(self.max_draws):
            params = self._complete({}, space)
            if self._feasible(params):
                return params
            self.redrawn += 1
        log.warning("No uniformly drawn sub-network met the analytic constraints in %d tries.", self.max_draws)
        return params
