"""Proposals of sub-networks not evaluated yet: a wrapper around an evolutionary algorithm's sampler.

A converged NSGA-II population in a small space keeps breeding children it has evaluated already; each used to
become a trial of its own, answered as a duplicate (PRUNED): a 24-evaluation search on a tiny space stored
1347 such trials, each a few storage round trips. Here a child whose sub-network is evaluated already (or in
flight in another worker) is replaced in memory by the algorithm's next child (the base sampler asked again,
which is what the next trial would have asked), so no trial is created for it and the evaluations are the
same sub-networks in the same order as before. After `max_draws` (`search.duplicate_patience`) children in a row
that are all taken, the last is let through: the worker answers it as a duplicate and, as it did after that many
duplicate trials, makes the next trial a random unevaluated sub-network (`DistinctSampler.let_through`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial

from nas.search.encoding import SearchEncoding
from nas.search.optuna_compat import storage_of
from nas.search.trials import SUBNET_ATTR, EvaluatedIndex
from nas.search.wrapping_sampler import WrappingSampler


class DistinctSampler(WrappingSampler):
    """`base`'s joint proposals, redrawn while their sub-network is taken (at most `max_draws` times).

    Args:
        base: the algorithm's sampler (its proposals must be free of side effects: NSGA-II's are).
        encoding: the search space's encoding.
        max_draws: children tried per trial before a taken one is let through (`search.duplicate_patience`).
    """

    def __init__(self, base: BaseSampler, encoding: SearchEncoding, max_draws: int = 100) -> None:
        super().__init__(base, encoding)
        self.max_draws = max_draws
        self.redrawn = 0  # children replaced because their sub-network was taken (for logs and tests)
        self.let_through = 0  # taken children let through after `max_draws` in a row
        self._evaluated: dict[tuple[int, int], EvaluatedIndex] = {}  # per study: its evaluations, kept up to date

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        proposal = self.base.sample_relative(study, trial, search_space)
        if not proposal or "fixed_params" in trial.system_attrs:  # a random phase, or an enqueued trial
            return proposal
        taken = self._taken(study, trial)
        for _ in range(self.max_draws - 1):
            if not taken(self._key(proposal)):
                return proposal
            self.redrawn += 1
            proposal = self.base.sample_relative(study, trial, search_space)
        if taken(self._key(proposal)):
            self.let_through += 1
        return proposal

    def _taken(self, study: optuna.Study, trial: FrozenTrial) -> Callable[[str], bool]:
        """Whether a sub-network is evaluated, or being evaluated by another trial (the study as the worker last
        read it)."""
        index = self._evaluated.setdefault((id(storage_of(study)), study._study_id), EvaluatedIndex())
        evaluated = index.update(study.get_trials(deepcopy=False))
        running = {
            t.user_attrs[SUBNET_ATTR]
            for t in index.running()
            if t.number != trial.number and SUBNET_ATTR in t.user_attrs
        }
        return lambda key: key in evaluated or key in running

    def _key(self, params: dict[str, Any]) -> str:
        return self.decode(params).to_json()


def distinct_sampler(sampler: BaseSampler | None) -> DistinctSampler | None:
    """The `DistinctSampler` that `sampler` is or wraps, if any."""
    while sampler is not None:
        if isinstance(sampler, DistinctSampler):
            return sampler
        sampler = getattr(sampler, "base", None)
    return None
