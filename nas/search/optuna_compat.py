"""Where this project adapts to Optuna: the only calls into its private API (each says why no public
one serves) and the experimental features it relies on (whose warnings are silenced here, not globally).

Optuna's lower bound in `pyproject.toml` is the version these were checked against (5.0); a change
in a later release breaks here, in one place, and in the tests of `test_search_parts.py`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import optuna
from optuna._hypervolume import compute_hypervolume as _compute_hypervolume  # exact (WFG for 3+ objectives)
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, Trial


def storage_of(study: optuna.Study) -> BaseStorage:
    """The study's storage: heartbeats are recorded on it directly (a `Study` exposes no accessor, and
    `Study.optimize`, which records them itself, cannot run our ask / look-up / tell loop)."""
    return study._storage


def trial_id_of(trial: Trial | FrozenTrial) -> int:
    """The storage's id of a trial (heartbeats and attributes are keyed by it, not by its number)."""
    return int(trial._trial_id)


def set_frozen_trial_user_attr(study: optuna.Study, trial: FrozenTrial, key: str, value: Any) -> None:
    """Set a user attribute from inside a sampler, which is handed a `FrozenTrial` (read-only in the
    public API) while the trial is running."""
    storage_of(study).set_trial_user_attr(trial_id_of(trial), key, value)


def database_engine(study: optuna.Study) -> Any:
    """The SQLAlchemy engine under a study's RDB storage (Optuna wraps it in a cache and exposes neither), for
    what Optuna's API cannot do: atomic claims and locks."""
    from optuna.storages import RDBStorage

    storage = storage_of(study)
    storage = getattr(storage, "_backend", storage)
    if not isinstance(storage, RDBStorage):
        raise TypeError(f"{type(storage).__name__} is not a database storage.")
    return storage.engine


def claim_study_attr(study: optuna.Study, key: str, value: Any) -> bool:
    """Set a study user attribute only if no one has: True for the one caller (of any process or machine) whose
    insert created it. Optuna's `set_study_user_attr` overwrites (no compare-and-set), so this inserts the row
    itself; the table's unique (study, key) constraint makes it atomic on every SQL engine."""
    import json

    import sqlalchemy
    from optuna.storages._rdb.models import StudyUserAttributeModel

    table = StudyUserAttributeModel.__table__
    row = {"study_id": study._study_id, "key": key, "value_json": json.dumps(value)}
    try:
        with database_engine(study).begin() as connection:
            connection.execute(sqlalchemy.insert(table).values(**row))
    except sqlalchemy.exc.IntegrityError:
        return False
    return True


def compute_hypervolume(points: np.ndarray, reference: np.ndarray) -> float:
    """Exact hypervolume of `points` (minimised) up to `reference`: Optuna has no public function for it."""
    return float(_compute_hypervolume(points, reference))


@contextmanager
def experimental_features() -> Iterator[None]:
    """Silence Optuna's warnings about the experimental features we chose: SBX crossover, polynomial
    mutation, heartbeats, `fail_stale_trials`, and heartbeats used outside `Study.optimize` (our loop
    records them itself, see `nas.search.study.heartbeat`)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        yield
