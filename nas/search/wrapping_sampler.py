"""A sampler around an algorithm's sampler: what the wrappers of `nas.search` (`FeasibleSampler`,
`DistinctSampler`) share. Everything but the joint proposal goes to the wrapped sampler."""

from __future__ import annotations

from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from nas.search.encoding import SearchEncoding
from nas.supernet.subnetwork import SubNetwork


class WrappingSampler(BaseSampler):
    """Delegates to `base`; subclasses change `sample_relative` (and what else they need)."""

    def __init__(self, base: BaseSampler, encoding: SearchEncoding) -> None:
        self.base = base
        self.encoding = encoding

    def reseed_rng(self) -> None:
        self.base.reseed_rng()

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.base.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self.base.sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self.base.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.base.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Any) -> None:
        self.base.after_trial(study, trial, state, values)

    def decode(self, params: dict[str, Any]) -> SubNetwork:
        """The sub-network of a joint proposal (one-choice parameters, left out of it, at index 0)."""
        return self.encoding.decode({name: int(params.get(name, 0)) for name in self.encoding.names})
