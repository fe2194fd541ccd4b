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
from collections.abc import Iterable, Mapping, Sequence
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


def _completion(trial: FrozenTrial) -> tuple[bool, Any, int]:
    return trial.datetime_complete is None, trial.datetime_complete, trial.number


def _by_completion(trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    return sorted(trials, key=_completion)


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


def _is_evaluation(trial: FrozenTrial) -> bool:
    """A real evaluation (finite or not): what counts against the budget."""
    if SUBNET_ATTR not in trial.user_attrs or not trial.user_attrs.get(EVALUATED_ATTR):
        return False
    return trial.state == TrialState.COMPLETE or (
        trial.state == TrialState.FAIL and bool(trial.user_attrs.get(NON_FINITE_ATTR))
    )


def evaluated_by_key_in(trials: Iterable[FrozenTrial]) -> dict[str, FrozenTrial]:
    """`evaluated_by_key` of trials read once (one storage read for several questions about the same moment): in
    the order they completed; of two evaluations of one sub-network, the later."""
    return {t.user_attrs[SUBNET_ATTR]: t for t in _by_completion(filter(_is_evaluation, trials))}


class EvaluatedIndex:
    """`evaluated_by_key_in` of successive whole reads of one study, kept up to date instead of rebuilt.

    A finished trial never changes, so each `update` looks only at the trials that are new since the last read
    or were unfinished in it: a worker's questions per trial (budget, duplicates, progress) cost what changed, not
    the study's size (rebuilt three times per trial, the map was a third of a 1500-evaluation search's own time).

    Attributes:
        by_key: the evaluations by sub-network key, as `evaluated_by_key_in` gives them (callers only read it).
        found: every evaluation indexed, in the order found (a reader's cursor into what is new).
        unfinished: the trials unfinished in the last read, by number.
    """

    def __init__(self) -> None:
        self.by_key: dict[str, FrozenTrial] = {}
        self.found: list[FrozenTrial] = []
        self.unfinished: dict[int, FrozenTrial] = {}
        self._found_numbers: set[int] = set()
        self._looked_at = 0  # the study's trials 0.._looked_at - 1 were looked at

    def update(self, trials: Sequence[FrozenTrial]) -> dict[str, FrozenTrial]:
        """Bring the index to `trials` (the study's whole last read, in number order); returns `by_key`."""
        whole = not trials or trials[-1].number == len(trials) - 1
        if whole and len(trials) >= max(self._looked_at, max(self.unfinished, default=-1) + 1):
            looked_at = [trials[number] for number in self.unfinished] + list(trials[self._looked_at :])
            self._looked_at = len(trials)
        else:  # not the trials 0..n-1 (a read that raced another worker's new trial): all of them, this time
            looked_at, self._looked_at = list(trials), 0
        self.unfinished = {t.number: t for t in looked_at if not t.state.is_finished()}
        for trial in _by_completion(filter(_is_evaluation, looked_at)):
            if trial.number in self._found_numbers:
                continue
            key = trial.user_attrs[SUBNET_ATTR]
            earlier = self.by_key.get(key)
            if earlier is None or _completion(earlier) <= _completion(trial):
                self.by_key[key] = trial
            self.found.append(trial)
            self._found_numbers.add(trial.number)
        return self.by_key

    def running(self) -> list[FrozenTrial]:
        """The trials running in the last read."""
        return [t for t in self.unfinished.values() if t.state == TrialState.RUNNING]


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
