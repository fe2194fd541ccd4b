"""The study's storage as one worker uses it: the small writes to its running trial sent in one transaction,
and the sampler's reads answered from the worker's last read of the study.

A proposal used to cost one storage transaction per parameter (31 for SmolLM2's LLaMA-NAS space, each a commit
and a look-up of the trial through Optuna's ORM) and one per attribute, and the sampler read the study three to
four times per proposal on top of the worker's own reads: about 0.3 s of storage work per trial on SQLite, as
long as a cheap objective's evaluation. Here

- parameters, user / system attributes and heartbeats of a trial are buffered and written together, in one
  transaction, before any other write and before any read of the study's trials (a trial's final attributes
  land in the transaction of its new state): every reader, in this process or another, sees them before it
  could see anything written after them, as before;
- inside `answering_from_last_read()` (the sampler's proposal), reads of the study's trials are served from
  the worker's last read, as Optuna's own per-trial cache does within one `ask`; every other read is fresh;
- every trial this worker starts names it (`stamp_trials`) in the transaction that creates it.

Writes that Optuna makes outside a running trial's parameters and attributes go through at once; the study's
attributes are read straight from the database.
"""

from __future__ import annotations

import copy
import datetime
import threading
import time
from collections.abc import Callable, Container, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from operator import attrgetter
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.storages import BaseStorage, RDBStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from nas.search.optuna_compat import (
    BaseHeartbeat,
    FrozenStudy,
    TrialWrites,
    create_trial,
    load_trials,
    storage_of,
    study_system_attrs,
    trial_state,
    trial_states,
    write_trial_batch,
)

# How long after this worker wrote (or read) an own running trial's state it takes that state as current.
CONFIRMED_SECONDS = 0.5


class BatchedStorage(BaseStorage, BaseHeartbeat):
    """An RDB storage whose running trials' writes are sent together, read incrementally.

    Reads are incremental, as in Optuna's `_CachedStorage` (a finished trial is read once), and the trials this worker
    created are mirrored in memory with everything it wrote to them: a read of the study asks the database
    only which trials changed state since the last read (one query of one table) and loads whole only the
    ones this worker does not know as they are (another worker's, or one of its own failed by another worker
    as dead); `get_trial` of an own running trial (Optuna reads the trial at every `ask` and twice per `tell`)
    checks only its state.

    Args:
        backend: the study's `RDBStorage` (`nas.search.study.open_storage`).
    """

    def __init__(self, backend: RDBStorage) -> None:
        self.backend = backend
        self._studies: dict[int, _KnownTrials] = {}
        self._pending: dict[int, TrialWrites] = {}
        self._own: dict[int, FrozenTrial] = {}  # trials this worker created, as written
        self._confirmed: dict[int, float] = {}  # when each own trial's state was last written or read
        self._beaten: set[int] = set()  # own trials with a heartbeat row
        self._distributions: dict[str, BaseDistribution] = {}  # checked against the study's once per process
        self._lock = threading.RLock()  # the heartbeat thread writes too
        self._answer_from_last_read = False
        self._stamp: dict[str, Any] = {}  # user attributes every trial this worker runs gets when it starts

    # --- what this wrapper adds ------------------------------------------------------------------

    def flush(self) -> None:
        """Write every buffered parameter, attribute and heartbeat, one transaction per trial (none: no-op)."""
        with self._lock:
            for trial_id in list(self._pending):
                self._write(trial_id)

    @contextmanager
    def answering_from_last_read(self) -> Iterator[None]:
        """Serve reads of the study's trials from the last read while inside (a sampler's proposal)."""
        self._answer_from_last_read = True
        try:
            yield
        finally:
            self._answer_from_last_read = False

    def _write(self, trial_id: int, state: TrialState | None = None, values: Sequence[float] | None = None) -> bool:
        """One trial's buffered writes (and its new state, if given) in one transaction."""
        writes = self._pending.get(trial_id, TrialWrites())
        try:
            now = datetime.datetime.now()  # the time stored with a new state, mirrored as stored
            done = write_trial_batch(self.backend, trial_id, writes, self._distributions, state, values, now)
        except optuna.exceptions.UpdateFinishedTrialError:
            self._pending.pop(trial_id, None)  # finished meanwhile (failed as dead): the writes can never land
            self._own.pop(trial_id, None)
            raise
        self._pending.pop(trial_id, None)  # kept on any other error (an outage): the retry writes them
        if writes.heartbeat:
            self._beaten.add(trial_id)
        if trial_id in self._own:
            mirrored = _with_writes(self._own[trial_id], writes)
            mirrored = _with_state(mirrored, state, values, now) if state is not None and done else mirrored
            self._own[trial_id] = mirrored
            self._confirmed[trial_id] = time.monotonic()
            for known in self._studies.values():  # the last read, as this write left the trial
                if trial_id in known.trials:
                    known.update(mirrored)
        return done

    def stamp_trials(self, user_attrs: dict[str, Any]) -> None:
        """Write `user_attrs` (the worker's id) with every trial this worker starts, in the transaction that
        creates it or takes it from the queue: a worker killed at any later moment leaves a trial that names it."""
        self._stamp = dict(user_attrs)

    def _writes(self, trial_id: int) -> TrialWrites:
        return self._pending.setdefault(trial_id, TrialWrites())

    # --- buffered writes -------------------------------------------------------------------------

    def set_trial_param(
        self, trial_id: int, param_name: str, param_value_internal: float, distribution: BaseDistribution
    ) -> None:
        with self._lock:
            self._writes(trial_id).params[param_name] = (param_value_internal, distribution)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        with self._lock:
            self._writes(trial_id).user_attrs[key] = copy.deepcopy(value)  # as written now, like a separate write

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        with self._lock:
            self._writes(trial_id).system_attrs[key] = copy.deepcopy(value)

    def record_heartbeat(self, trial_id: int) -> None:
        """Now, in the transaction of the trial's buffered writes (a new trial's worker, parameters and first
        heartbeat land together)."""
        with self._lock:
            writes = self._writes(trial_id)
            writes.heartbeat = True
            writes.first_heartbeat = trial_id in self._own and trial_id not in self._beaten
            self.flush()

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        """The new state in the transaction of the trial's buffered writes (a finished trial's attributes and
        its values land together, or neither)."""
        with self._lock:
            for other in [t for t in self._pending if t != trial_id]:
                self._write(other)
            if state == TrialState.RUNNING and self._stamp:  # a queued trial taken: it names its worker at once
                self._writes(trial_id).user_attrs.update(self._stamp)
            return self._write(trial_id, state, values)

    # --- trials: reads --------------------------------------------------------------------------

    def get_all_trials(
        self, study_id: int, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        with self._lock:
            known = self._studies.setdefault(study_id, _KnownTrials())
            if not (self._answer_from_last_read and known.read_once):
                self.flush()
                self._read_changes(study_id, known)
            trials = known.in_order()
        if states is not None:
            trials = [t for t in trials if t.state in states]
        return copy.deepcopy(trials) if deepcopy else trials

    def _read_changes(self, study_id: int, known: _KnownTrials) -> None:
        """Bring `known` up to date: the states of the trials that may have changed, then whole only those
        this worker does not know in that state."""
        changed = trial_states(self.backend, study_id, known.last_finished_id, known.unfinished_ids)
        stale = {i for i, state in changed.items() if i not in self._own or self._own[i].state != state}
        fresh = {t._trial_id: t for t in load_trials(self.backend, study_id, stale)}
        for trial_id in changed:
            trial = fresh.get(trial_id) or self._own.get(trial_id)
            if trial is not None:  # else deleted between the two queries
                known.update(trial)
        for trial in fresh.values():  # newer ones the second query met
            known.update(trial)
        known.read_once = True

    def get_trial(self, trial_id: int) -> FrozenTrial:
        """The trial as stored, with this worker's buffered writes to it (they are written with its next state,
        in the same transaction, or at the next read of the study)."""
        with self._lock:
            trial = self._own.get(trial_id)
            # A running one may have been failed by another worker (as dead): then it is read whole. Not within
            # moments of this worker's own write or read of its state: another worker fails a trial only after
            # its heartbeat's grace period, or a minute without a worker recorded (`nas.search.study`).
            recent = time.monotonic() - self._confirmed.get(trial_id, -np.inf) < CONFIRMED_SECONDS
            if trial is not None and not trial.state.is_finished() and not recent:
                if trial_state(self.backend, trial_id) != trial.state:
                    trial = self._own.pop(trial_id) and None
                else:
                    self._confirmed[trial_id] = time.monotonic()
            if trial is None:
                trial = self.backend.get_trial(trial_id)
            return _with_writes(trial, self._pending.get(trial_id, TrialWrites()))

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        with self._lock:
            self.flush()
            trial = create_trial(self.backend, study_id, template_trial, None if template_trial else self._stamp)
            self._own = {i: t for i, t in self._own.items() if not t.state.is_finished()}
            self._confirmed = {i: t for i, t in self._confirmed.items() if i in self._own}
            self._beaten &= set(self._own)
            self._own[trial._trial_id] = trial
            self._confirmed[trial._trial_id] = time.monotonic()
            return trial._trial_id

    # --- everything else: straight through, after the buffered writes ----------------------------

    def _flushed(self, method: Callable[..., Any], *args: Any) -> Any:
        with self._lock:
            self.flush()
            return method(*args)

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
        self._flushed(self.backend.set_trial_intermediate_value, trial_id, step, intermediate_value)
        self._own.pop(trial_id, None)  # not mirrored (searches report no intermediate values)

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        return self._flushed(self.backend.get_trial_id_from_study_id_trial_number, study_id, trial_number)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        return self._flushed(self.backend._get_stale_trial_ids, study_id)

    def get_heartbeat_interval(self) -> int | None:
        return self.backend.get_heartbeat_interval()

    def get_heartbeat_stale_trial_callback(self) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return self.backend.get_heartbeat_stale_trial_callback()

    def create_new_study(self, directions: Sequence[StudyDirection], study_name: str | None = None) -> int:
        return self._flushed(self.backend.create_new_study, directions, study_name)

    def delete_study(self, study_id: int) -> None:
        self._flushed(self.backend.delete_study, study_id)

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        self._flushed(self.backend.set_study_user_attr, study_id, key, value)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        self._flushed(self.backend.set_study_system_attr, study_id, key, value)

    def get_study_id_from_name(self, study_name: str) -> int:
        return self.backend.get_study_id_from_name(study_name)

    def get_study_name_from_id(self, study_id: int) -> str:
        return self.backend.get_study_name_from_id(study_id)

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        return self.backend.get_study_directions(study_id)

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return self.backend.get_study_user_attrs(study_id)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return study_system_attrs(self.backend, study_id)

    def get_all_studies(self) -> list[FrozenStudy]:
        return self.backend.get_all_studies()

    def remove_session(self) -> None:
        self._flushed(self.backend.remove_session)


class _KnownTrials:
    """A study's trials as last read (by trial id), and where the next read starts: every trial with an id
    above the newest finished one, and the unfinished ones below it (Optuna's `_CachedStorage` reads so)."""

    def __init__(self) -> None:
        self.trials: dict[int, FrozenTrial] = {}
        self.unfinished_ids: set[int] = set()
        self.last_finished_id = -1
        self.read_once = False
        # The trials by number, kept in order as they change: a worker reads the study several times per trial,
        # and sorting a study of a thousand trials each time cost more than the query.
        self._ordered: list[FrozenTrial] = []
        self._slot: dict[int, int] = {}  # trial id -> its place in `_ordered`

    def update(self, trial: FrozenTrial) -> None:
        trial_id = trial._trial_id
        self.trials[trial_id] = trial
        if trial.state.is_finished():
            self.unfinished_ids.discard(trial_id)
            self.last_finished_id = max(self.last_finished_id, trial_id)
        else:
            self.unfinished_ids.add(trial_id)
        slot = self._slot.get(trial_id)
        if slot is not None:  # a trial keeps its number: its place stays
            self._ordered[slot] = trial
        elif not self._ordered or self._ordered[-1].number < trial.number:  # the usual case: the newest trial
            self._slot[trial_id] = len(self._ordered)
            self._ordered.append(trial)
        else:  # another worker's trial read after a newer one
            self._ordered = sorted(self.trials.values(), key=attrgetter("number"))
            self._slot = {t._trial_id: i for i, t in enumerate(self._ordered)}

    def in_order(self) -> list[FrozenTrial]:
        """By number, as samplers expect (a list of the caller's own: later reads do not change it)."""
        return list(self._ordered)


def _with_writes(trial: FrozenTrial, writes: TrialWrites) -> FrozenTrial:
    """`trial` with the parameters and attributes of `writes` (a copy of its dicts; the trial itself when there are
    none)."""
    if not (writes.params or writes.user_attrs or writes.system_attrs):
        return trial
    trial = copy.copy(trial)
    trial.params = {**trial.params, **{name: d.to_external_repr(v) for name, (v, d) in writes.params.items()}}
    trial.distributions = {**trial.distributions, **{name: d for name, (_, d) in writes.params.items()}}
    trial.user_attrs = {**trial.user_attrs, **writes.user_attrs}
    trial.system_attrs = {**trial.system_attrs, **writes.system_attrs}
    return trial


def _with_state(
    trial: FrozenTrial, state: TrialState, values: Sequence[float] | None, now: datetime.datetime
) -> FrozenTrial:
    """`trial` as `write_trial_batch` left it in the database after a state change."""
    return FrozenTrial(
        number=trial.number,
        state=state,
        value=None,
        values=list(values) if values is not None else trial.values,
        datetime_start=now if state == TrialState.RUNNING else trial.datetime_start,
        datetime_complete=now if state.is_finished() else trial.datetime_complete,
        params=trial.params,
        distributions=trial.distributions,
        user_attrs=trial.user_attrs,
        system_attrs=trial.system_attrs,
        intermediate_values=trial.intermediate_values,
        trial_id=trial._trial_id,
    )


@contextmanager
def answering_from_last_read(study: optuna.Study) -> Iterator[None]:
    """`BatchedStorage.answering_from_last_read` of the study's storage; a plain storage reads as always."""
    storage = storage_of(study)
    with storage.answering_from_last_read() if isinstance(storage, BatchedStorage) else nullcontext():
        yield


def stamp_trials(study: optuna.Study, user_attrs: dict[str, Any]) -> None:
    """`BatchedStorage.stamp_trials` of the study's storage; nothing for a plain storage."""
    storage = storage_of(study)
    if isinstance(storage, BatchedStorage):
        storage.stamp_trials(user_attrs)
