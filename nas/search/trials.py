"""Reading a study's trials: which are real evaluations, which sub-network each one is.

A trial is a real evaluation when its worker scored it (`EVALUATED_ATTR`); it is COMPLETE with its
values, or, when an objective came out NaN or infinite, FAIL with the raw values in
`NON_FINITE_ATTR`: counted against the budget and never evaluated again, but on no front (NSGA-II
and LINAS see only COMPLETE trials). Duplicate look-ups, budget skips and trials of dead workers are
not evaluations. Every reader tolerates incomplete trials (a worker killed while its parameters were
being suggested leaves a trial with only some of them).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.errors import InvalidSubNetworkError
from nas.search.encoding import SearchEncoding
from nas.supernet.subnetwork import SubNetwork

EVALUATED_ATTR = "evaluated"
SUBNET_ATTR = "subnet_key"
NON_FINITE_ATTR = "non_finite"  # {objective: "nan" | "inf" | "-inf"} of a non-finite evaluation
DUPLICATE_ATTR = "duplicate_of"
FEASIBLE_ATTR = "feasible"  # False when the trial broke a constraint of its study (nas.search.constraints)


def _by_completion(trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    return sorted(trials, key=lambda t: (t.datetime_complete is None, t.datetime_complete, t.number))


def evaluations(study: optuna.Study) -> list[FrozenTrial]:
    """Real evaluations with finite values (the ones fronts are made of), in the order they completed."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return _by_completion(t for t in done if t.user_attrs.get(EVALUATED_ATTR))


def is_feasible_trial(trial: FrozenTrial) -> bool:
    """False when the trial broke a constraint of its study (studies without constraints: always True)."""
    return trial.user_attrs.get(FEASIBLE_ATTR, True) is not False


def feasible_evaluations(study: optuna.Study) -> list[FrozenTrial]:
    """Real evaluations with finite values that meet every constraint: what fronts and picks are made of."""
    return [t for t in evaluations(study) if is_feasible_trial(t)]


def non_finite_evaluations(study: optuna.Study) -> list[FrozenTrial]:
    """Real evaluations where an objective came out NaN or infinite, in the order they completed."""
    failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    return _by_completion(t for t in failed if t.user_attrs.get(EVALUATED_ATTR) and t.user_attrs.get(NON_FINITE_ATTR))


def evaluated_by_key(study: optuna.Study) -> dict[str, FrozenTrial]:
    """Every real evaluation (finite or not) by its sub-network's key: what counts against the budget."""
    return evaluated_by_key_in(study.get_trials(deepcopy=False))


def evaluated_by_key_in(trials: Iterable[FrozenTrial]) -> dict[str, FrozenTrial]:
    """`evaluated_by_key` of trials read once (one storage read for several questions about the same moment)."""
    counted = (TrialState.COMPLETE, TrialState.FAIL)
    return {
        t.user_attrs[SUBNET_ATTR]: t
        for t in _by_completion(t for t in trials if t.state in counted and t.user_attrs.get(EVALUATED_ATTR))
        if SUBNET_ATTR in t.user_attrs and (t.state == TrialState.COMPLETE or t.user_attrs.get(NON_FINITE_ATTR))
    }


def non_finite(values: Mapping[str, float]) -> dict[str, str]:
    """The objectives among `values` that are NaN or infinite, with their value as text."""
    return {name: str(float(v)) for name, v in values.items() if not math.isfinite(float(v))}


def decode_trial(encoding: SearchEncoding, trial: FrozenTrial) -> SubNetwork | None:
    """The trial's sub-network; None when its parameters are incomplete or no longer fit the space."""
    key = trial.user_attrs.get(SUBNET_ATTR)
    if isinstance(key, str):
        try:
            return SubNetwork.from_json(key)
        except (InvalidSubNetworkError, ValueError):
            pass
    if set(encoding.names) - set(trial.params):
        return None
    try:
        return encoding.decode(trial.params)
    except (KeyError, IndexError, ValueError, InvalidSubNetworkError):
        return None


def trial_values(trial: FrozenTrial, names: Iterable[str]) -> dict[str, Any]:
    """Objective name -> value: the stored values, or the non-finite ones as text, or None."""
    names = list(names)
    if trial.values:
        return dict(zip(names, trial.values))
    raw = trial.user_attrs.get(NON_FINITE_ATTR) or {}
    return {name: raw.get(name) for name in names}
