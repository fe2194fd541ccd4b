"""Where this project adapts to Optuna: the only calls into its private API (each says why no public
one serves) and the experimental features it relies on (whose warnings are silenced here, not globally).

Optuna's lower bound in `pyproject.toml` is the version these were checked against (5.0); a change
in a later release breaks here, in one place, and in the tests of `test_search_parts.py`.
"""

from __future__ import annotations

import datetime
import functools
import json
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
import sqlalchemy
from optuna._hypervolume import compute_hypervolume as _compute_hypervolume  # exact (WFG for 3+ objectives)
from optuna.distributions import (
    BaseDistribution,
    FloatDistribution,
    IntDistribution,
    check_distribution_compatibility,
    distribution_to_json,
    json_to_distribution,
)
from optuna.storages import BaseStorage, RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat as BaseHeartbeat  # re-exported: no public home
from optuna.study._frozen import FrozenStudy as FrozenStudy  # re-exported: `get_all_studies`'s return type
from optuna.study._tell import _tell_with_warning
from optuna.trial import FrozenTrial, Trial, TrialState


def storage_of(study: optuna.Study) -> BaseStorage:
    """The study's storage: heartbeats are recorded on it directly (a `Study` exposes no accessor, and
    `Study.optimize`, which records them itself, cannot run our ask / look-up / tell loop)."""
    return study._storage


def trial_id_of(trial: Trial | FrozenTrial) -> int:
    """The storage's id of a trial (heartbeats and attributes are keyed by it, not by its number)."""
    return int(trial._trial_id)


def tell(
    study: optuna.Study,
    trial: Trial | int,
    values: Sequence[float] | None = None,
    state: TrialState | None = None,
    skip_if_finished: bool = False,
) -> None:
    """`Study.tell` without its return value: Optuna's returns a deep copy of the finished trial, which no caller
    here reads and which cost 0.7 ms of a search's 10 ms per trial on a cheap objective (31 parameters, 6
    attributes). The same checks, sampler callback and storage write; its warnings are shown."""
    _tell_with_warning(study=study, trial=trial, value_or_values=values, state=state, skip_if_finished=skip_if_finished)


def random_stream(sampler: optuna.samplers.RandomSampler) -> np.random.RandomState:
    """The random stream a `RandomSampler` draws from (seeded by its `seed`, reseeded by `reseed_rng`): a sampler
    drawing the same values more cheaply (`nas.search.random_draws`) must draw from it, and Optuna exposes it only
    as a private attribute."""
    return sampler._rng.rng


def set_frozen_trial_user_attr(study: optuna.Study, trial: FrozenTrial, key: str, value: Any) -> None:
    """Set a user attribute from inside a sampler, which is handed a `FrozenTrial` (read-only in the
    public API) while the trial is running."""
    storage_of(study).set_trial_user_attr(trial_id_of(trial), key, value)


def database_engine(study: optuna.Study) -> Any:
    """The SQLAlchemy engine under a study's RDB storage (Optuna wraps it in a cache and exposes neither), for
    what Optuna's API cannot do: atomic claims and locks."""
    storage: Any = storage_of(study)
    for _ in range(3):  # ours (`BatchedStorage.backend`) around Optuna's cache (`_CachedStorage._backend`)
        if isinstance(storage, RDBStorage):
            break
        storage = getattr(storage, "backend", getattr(storage, "_backend", storage))
    if not isinstance(storage, RDBStorage):
        raise TypeError(f"{type(storage).__name__} is not a database storage.")
    return storage.engine


def claim_study_attr(study: optuna.Study, key: str, value: Any) -> bool:
    """Set a study user attribute only if no one has: True for the one caller (of any process or machine) whose
    insert created it. Optuna's `set_study_user_attr` overwrites (no compare-and-set), so this inserts the row
    itself; the table's unique (study, key) constraint makes it atomic on every SQL engine."""
    from optuna.storages._rdb.models import StudyUserAttributeModel

    table = StudyUserAttributeModel.__table__
    row = {"study_id": study._study_id, "key": key, "value_json": json.dumps(value)}
    try:
        with database_engine(study).begin() as connection:
            connection.execute(sqlalchemy.insert(table).values(**row))
    except sqlalchemy.exc.IntegrityError:
        return False
    return True


def cached_rdb_storage(backend: RDBStorage) -> BaseStorage:
    """Optuna's caching wrapper of an RDB storage (finished trials read once), as `optuna.create_study` builds it
    for an `RDBStorage`, for a storage that wraps it in turn (`nas.search.batched_storage`)."""
    return optuna.storages.get_storage(backend)


@functools.cache
def _sql() -> Any:
    """The statements of `create_trial` and `write_trial_batch`, built once: SQLAlchemy compiles a statement
    once per engine, but a statement built anew per call is walked anew for its cache key (a third of a
    trial's storage time)."""
    from types import SimpleNamespace

    from optuna.storages._rdb import models

    studies, trials = models.StudyModel.__table__, models.TrialModel.__table__
    study_system_attrs = models.StudySystemAttributeModel.__table__
    heartbeats = models.TrialHeartbeatModel.__table__
    trial_id: Any = sqlalchemy.bindparam("tid")
    now = sqlalchemy.func.current_timestamp()
    state_of = sqlalchemy.select(trials.c.state, trials.c.study_id).where(trials.c.trial_id == trial_id)
    states_since = sqlalchemy.select(trials.c.trial_id, trials.c.state).where(
        trials.c.study_id == sqlalchemy.bindparam("sid"),
        sqlalchemy.or_(
            trials.c.trial_id > sqlalchemy.bindparam("after"),
            trials.c.trial_id.in_(sqlalchemy.bindparam("among", expanding=True)),
        ),
    )
    return SimpleNamespace(
        states_since=states_since,
        lock_study=sqlalchemy.select(studies.c.study_id)
        .where(studies.c.study_id == sqlalchemy.bindparam("sid"))
        .with_for_update(),
        study_system_attrs=sqlalchemy.select(study_system_attrs.c.key, study_system_attrs.c.value_json).where(
            study_system_attrs.c.study_id == sqlalchemy.bindparam("sid")
        ),
        insert_trial=sqlalchemy.insert(trials),
        count_before=sqlalchemy.select(sqlalchemy.func.count(trials.c.trial_id)).where(
            trials.c.study_id == sqlalchemy.bindparam("sid"), trials.c.trial_id < trial_id
        ),
        update_trial=sqlalchemy.update(trials).where(trials.c.trial_id == trial_id),
        state_of=state_of,
        state_of_for_update=state_of.with_for_update(),
        insert_params=sqlalchemy.insert(models.TrialParamModel.__table__),
        insert_values=sqlalchemy.insert(models.TrialValueModel.__table__),
        first_beat=sqlalchemy.insert(heartbeats).values(trial_id=trial_id, heartbeat=now),
        beat=sqlalchemy.update(heartbeats).where(heartbeats.c.trial_id == trial_id).values(heartbeat=now),
    )


def create_trial(
    backend: RDBStorage,
    study_id: int,
    template_trial: FrozenTrial | None = None,
    user_attrs: dict[str, Any] | None = None,
) -> FrozenTrial:
    """A new trial, and the `FrozenTrial` of it (Optuna's public `create_new_trial` returns only the id, and
    reading the trial back is a query of six tables). Inserted as Optuna's `_create_new_trial` does it (under the
    study's row lock, numbered by the study's trials before it), without its ORM: a running trial (every `ask`)
    or a template with attributes only (an enqueued trial); a template with parameters or values goes through
    Optuna. `user_attrs`: written with a running trial, in the transaction that creates it."""
    from optuna.storages._rdb import models

    template = template_trial
    if template is not None and (template.params or template.values or template.intermediate_values):
        return backend._create_new_trial(study_id, template)
    state = template.state if template is not None else TrialState.RUNNING
    start = template.datetime_start if template is not None else datetime.datetime.now()
    complete = template.datetime_complete if template is not None else None
    sql = _sql()
    with backend.engine.begin() as connection:
        if connection.execute(sql.lock_study, {"sid": study_id}).one_or_none() is None:
            raise KeyError(f"No study with study_id {study_id} exists.")
        row = {"study_id": study_id, "number": None, "state": state, "datetime_start": start}
        inserted = connection.execute(sql.insert_trial, {**row, "datetime_complete": complete})
        trial_id = int(inserted.inserted_primary_key[0])  # type: ignore[index]
        number = connection.execute(sql.count_before, {"sid": study_id, "tid": trial_id}).scalar_one()
        connection.execute(sql.update_trial, {"tid": trial_id, "number": number})
        user_attrs = dict(template.user_attrs) if template is not None else dict(user_attrs or {})
        system_attrs = dict(template.system_attrs) if template is not None else {}
        for model, attrs in (
            (models.TrialUserAttributeModel, user_attrs),
            (models.TrialSystemAttributeModel, system_attrs),
        ):
            _upsert_attrs(connection, backend.engine.name, model.__table__, trial_id, attrs)
    return FrozenTrial(
        number=number,
        state=state,
        value=None,
        values=None,
        datetime_start=start,
        datetime_complete=complete,
        params={},
        distributions={},
        user_attrs=user_attrs,
        system_attrs=system_attrs,
        intermediate_values={},
        trial_id=trial_id,
    )


def trial_states(backend: RDBStorage, study_id: int, after: int, among: set[int]) -> dict[int, TrialState]:
    """The states of a study's trials with an id above `after` or in `among`, in one query of one table (what
    changed since a read, to load only those whole; a whole read is a query of six tables)."""
    parameters = {"sid": study_id, "after": after, "among": sorted(among)}
    with backend.engine.connect() as connection:
        rows = connection.execute(_sql().states_since, parameters).all()
    return {int(trial_id): _enum(TrialState, state) for trial_id, state in rows}


def trial_state(backend: RDBStorage, trial_id: int) -> TrialState:
    """One trial's state, read alone (one row, where `get_trial` reads six tables)."""
    with backend.engine.connect() as connection:
        state = connection.execute(_sql().state_of, {"tid": trial_id}).one().state
    return _enum(TrialState, state)


def study_system_attrs(backend: RDBStorage, study_id: int) -> dict[str, Any]:
    """The study's system attributes, as Optuna's `get_study_system_attrs` reads them, in one query of one table
    without its ORM: NSGA-II reads them at every proposal and keeps each generation's parents there, and the ORM's
    read (an object per attribute) grew with the generations to a quarter of a 1500-evaluation search's own time."""
    with backend.engine.connect() as connection:
        rows = connection.execute(_sql().study_system_attrs, {"sid": study_id}).all()
    if not rows:  # none yet, or no such study: Optuna's own read tells which (its error)
        return backend.get_study_system_attrs(study_id)
    return {key: json.loads(value) for key, value in rows}


def load_trials(backend: RDBStorage, study_id: int, trial_ids: set[int]) -> list[FrozenTrial]:
    """Some of a study's trials, whole (and any newer than the newest of them)."""
    return backend._get_trials(study_id, None, trial_ids, max(trial_ids)) if trial_ids else []


@dataclass
class TrialWrites:
    """A running trial's writes sent together (the last value of each key wins, as with separate writes)."""

    params: dict[str, tuple[float, BaseDistribution]] = field(default_factory=dict)
    user_attrs: dict[str, Any] = field(default_factory=dict)
    system_attrs: dict[str, Any] = field(default_factory=dict)
    heartbeat: bool = False
    first_heartbeat: bool = False  # the trial has no heartbeat row yet: insert it

    def __bool__(self) -> bool:
        return bool(self.params or self.user_attrs or self.system_attrs or self.heartbeat)


def write_trial_batch(
    backend: RDBStorage,
    trial_id: int,
    writes: TrialWrites,
    known_distributions: dict[str, BaseDistribution],
    state: TrialState | None = None,
    values: Sequence[float] | None = None,
    now: datetime.datetime | None = None,
) -> bool:
    """A running trial's parameters, attributes, heartbeat and (optionally) new state and values in one
    transaction, with the checks Optuna's own `set_trial_param` / `set_trial_*_attr` / `set_trial_state_values`
    make (the trial still updatable; each parameter's distribution compatible with the study's). Optuna writes
    each in a transaction of its own, through its ORM, with a look-up of the trial each, and has no batch write;
    this is one statement per table. `known_distributions`: the study's distributions checked already, extended
    here. `now`: the start or completion time a state change records. Returns what `set_trial_state_values` returns (False: a WAITING trial was taken by another worker)."""
    from optuna.storages._rdb import models

    sql = _sql()
    try:
        with backend.engine.begin() as connection:
            query = sql.state_of_for_update if state is not None else sql.state_of
            row = connection.execute(query, {"tid": trial_id}).one_or_none()
            if row is None:
                raise KeyError(f"No trial with trial_id {trial_id} exists.")
            current = _enum(TrialState, row.state)
            backend.check_trial_is_updatable(trial_id, current)
            _insert_params(connection, models, backend, row.study_id, trial_id, writes.params, known_distributions)
            for model_cls, attrs in (
                (models.TrialUserAttributeModel, writes.user_attrs),
                (models.TrialSystemAttributeModel, writes.system_attrs),
            ):
                _upsert_attrs(connection, backend.engine.name, model_cls.__table__, trial_id, attrs)
            if writes.heartbeat:
                _beat(connection, trial_id, writes.first_heartbeat)
            if state is None:
                return True
            if values:
                stored = [models.TrialValueModel.value_to_stored_repr(v) for v in values]
                connection.execute(
                    sql.insert_values,
                    [
                        {"trial_id": trial_id, "objective": i, "value": value, "value_type": kind}
                        for i, (value, kind) in enumerate(stored)
                    ],
                )
            if state == TrialState.RUNNING and current != TrialState.WAITING:
                return False
            now = now or datetime.datetime.now()
            changes: dict[str, Any] = {"state": state}
            if state == TrialState.RUNNING:
                changes["datetime_start"] = now
            if state.is_finished():
                changes["datetime_complete"] = now
            connection.execute(sql.update_trial, {"tid": trial_id, **changes})
    except sqlalchemy.exc.IntegrityError:
        if state is not None:
            return False  # as Optuna's `set_trial_state_values`: another worker's write collided
        raise
    return True


def _enum(kind: Any, value: Any) -> Any:
    """A column's enum value (SQLAlchemy returns the member, or its name on some engines)."""
    return value if isinstance(value, kind) else kind[value]


def _insert_params(
    connection: Any,
    models: Any,
    backend: RDBStorage,
    study_id: int,
    trial_id: int,
    params: dict[str, tuple[float, BaseDistribution]],
    known_distributions: dict[str, BaseDistribution],
) -> None:
    """Insert a trial's parameters, each checked against the study's distribution of that name (read once per
    process: the first trial of the study to have the parameter sets it)."""
    if not params:
        return
    table = models.TrialParamModel.__table__
    unknown = [name for name in params if name not in known_distributions]
    if unknown:
        trials = models.TrialModel.__table__
        rows = connection.execute(
            sqlalchemy.select(table.c.param_name, table.c.distribution_json)
            .join(trials, trials.c.trial_id == table.c.trial_id)
            .where(trials.c.study_id == study_id, table.c.param_name.in_(unknown))
            .distinct()
        ).all()
        for name, distribution_json in rows:
            known_distributions.setdefault(name, json_to_distribution(distribution_json))
    for name, (_, distribution) in params.items():
        if name in known_distributions:
            check_distribution_compatibility(known_distributions[name], distribution)
        else:
            known_distributions[name] = distribution
    connection.execute(
        _sql().insert_params,
        [
            {
                "trial_id": trial_id,
                "param_name": name,
                "param_value": value,
                "distribution_json": _distribution_json(distribution),
            }
            for name, (value, distribution) in params.items()
        ],
    )


def _distribution_json(distribution: BaseDistribution) -> str:
    """`distribution_to_json`, once per numerical distribution (a trial stores one per parameter: 31 on SmolLM2's
    space). Not categorical ones: choices 1 and True are equal as keys but not as JSON."""
    if isinstance(distribution, (IntDistribution, FloatDistribution)):
        return _numerical_distribution_json(distribution)
    return distribution_to_json(distribution)


@functools.lru_cache(maxsize=4096)
def _numerical_distribution_json(distribution: BaseDistribution) -> str:
    return distribution_to_json(distribution)


@functools.cache
def _upsert_statement(dialect: str, table: Any) -> Any:
    """The dialect's insert-or-update of a trial attribute table, built once (its `excluded` alias costs more
    than executing it); None where the engine has no upsert."""
    if dialect in ("sqlite", "postgresql"):
        from sqlalchemy.dialects import postgresql, sqlite

        insert = (sqlite if dialect == "sqlite" else postgresql).insert(table)
        return insert.on_conflict_do_update(
            index_elements=[table.c.trial_id, table.c.key], set_={"value_json": insert.excluded.value_json}
        )
    if dialect == "mysql":
        from sqlalchemy.dialects import mysql

        mysql_insert = mysql.insert(table)
        return mysql_insert.on_duplicate_key_update(value_json=mysql_insert.inserted.value_json)
    return None


def _upsert_attrs(connection: Any, dialect: str, table: Any, trial_id: int, attrs: dict[str, Any]) -> None:
    """Insert or update a trial's attributes in one statement (Optuna's `_set_trial_attr_without_commit` does
    one by one, with the same upserts)."""
    if not attrs:
        return
    rows = [{"trial_id": trial_id, "key": key, "value_json": json.dumps(value)} for key, value in attrs.items()]
    statement = _upsert_statement(dialect, table)
    if statement is not None:
        connection.execute(statement, rows)
        return
    for row in rows:
        key_matches = (table.c.trial_id == trial_id) & (table.c.key == row["key"])
        updated = connection.execute(sqlalchemy.update(table).where(key_matches).values(value_json=row["value_json"]))
        if not updated.rowcount:
            connection.execute(sqlalchemy.insert(table), [row])


def _beat(connection: Any, trial_id: int, first: bool = False) -> None:
    """`RDBStorage.record_heartbeat` inside an open transaction: the database's clock, as Optuna reads it."""
    sql = _sql()
    if first or not connection.execute(sql.beat, {"tid": trial_id}).rowcount:
        connection.execute(sql.first_beat, {"tid": trial_id})


def compute_hypervolume(points: np.ndarray, reference: np.ndarray, assume_pareto: bool = False) -> float:
    """Exact hypervolume of `points` (minimised) up to `reference`: Optuna has no public function for it.
    `assume_pareto`: no point dominates another (Optuna then skips looking for dominated ones)."""
    return float(_compute_hypervolume(points, reference, assume_pareto=assume_pareto))


@contextmanager
def experimental_features() -> Iterator[None]:
    """Silence Optuna's warnings about the experimental features we chose: SBX crossover, polynomial
    mutation, heartbeats, `fail_stale_trials`, and heartbeats used outside `Study.optimize` (our loop
    records them itself, see `nas.search.study.Heartbeat`)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        yield
