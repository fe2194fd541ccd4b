"""Optuna studies in a real database: opening storages, creating or resuming a study safely, and
recovering trials whose worker died.

A study records what it measures (search space, objectives, evaluation settings, weights) in its
user attributes; resuming with anything different is refused before a single evaluation, so an
existing study is never mixed with incompatible trials.
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import json
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import optuna
import psutil
import sqlalchemy
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from nas.errors import SearchConfigError
from nas.io.secrets import redact_url, with_password
from nas.search.optuna_compat import database_engine, experimental_features, tell
from nas.search.sqlite_wal import use_write_ahead_log

log = logging.getLogger(__name__)

SIGNATURE_ATTR = "nas_signature"
REFERENCE_ATTR = "nas_reference"
WORKER_ATTR = "worker"


def storage_url(value: str | None, output_dir: str | Path) -> str:
    """`search.storage`, or a SQLite file `study.db` in the run directory."""
    if value:
        return str(value)
    return f"sqlite:///{Path(output_dir).resolve() / 'study.db'}"


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL; None for other engines and in-memory databases."""
    if not url.startswith("sqlite"):
        return None
    path = url.split(":///", 1)[-1]
    return Path(path) if path and path != ":memory:" and url.count(":///") else None


@contextmanager
def setup_lock(url: str) -> Iterator[None]:
    """Serialise what workers starting together do once: create the tables, create the study.

    SQLite: an exclusive lock on `<db>.lock` beside the database file. Server databases rely on
    `_retrying_races` instead (their workers may run on other machines).
    """
    path = sqlite_file(url)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _is_creation_race(exc: BaseException) -> bool:
    """A conflict with another worker creating the same tables or rows at the same moment."""
    text = str(exc).lower()
    return any(s in text for s in ("already exists", "unique constraint", "duplicate key", "alembic_version"))


def _retrying_races(action: Callable[[], Any], attempts: int = 6) -> Any:
    """Run `action`, again after a short random pause while it loses a creation race (Optuna's table
    creation and its Alembic version row are not safe against concurrent first use)."""
    for attempt in range(attempts):
        try:
            return action()
        except Exception as exc:
            if attempt == attempts - 1 or not _is_creation_race(exc):
                raise
            log.info("Another worker is creating the study storage; trying again (%s).", type(exc).__name__)
            time.sleep(0.2 + random.random() * 0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def open_storage(url: str, heartbeat_interval: int | None = 60, grace_period: int | None = None) -> RDBStorage:
    """An RDB storage (SQLite, PostgreSQL, MySQL, ...); trials of dead workers fail after the grace period.

    Safe for workers that start at the same moment on a new database.
    """
    # SQLite: several worker processes write to one file, so wait for its lock instead of failing at once.
    # Servers: a restart under a running search leaves dead pooled connections, so test each before use.
    engine_kwargs: dict[str, Any] = (
        {"connect_args": {"timeout": 120}} if sqlite_file(url) is not None else {"pool_pre_ping": True}
    )
    try:
        with setup_lock(url), experimental_features():  # heartbeats
            storage = cast(
                RDBStorage,
                _retrying_races(
                    lambda: RDBStorage(
                        with_password(url),
                        engine_kwargs=engine_kwargs,
                        heartbeat_interval=heartbeat_interval,
                        grace_period=grace_period,
                    )
                ),
            )
    except Exception as exc:
        raise SearchConfigError(
            f"Cannot open the study storage search.storage={redact_url(url)}: {type(exc).__name__}: {exc}. "
            "Give a reachable SQLAlchemy URL, e.g. sqlite:////abs/path/study.db or "
            "postgresql+psycopg://user@host:5432/db with the password in $NAS_STORAGE_PASSWORD (or PGPASSWORD / "
            "~/.pgpass), or leave search.storage unset for a SQLite file in the run directory."
        ) from exc
    database = sqlite_file(url)
    if database is not None:
        use_write_ahead_log(storage.engine, database)
    return storage


def _differences(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    keys = sorted(set(stored) | set(wanted))
    return [k for k in keys if json.dumps(stored.get(k), sort_keys=True) != json.dumps(wanted.get(k), sort_keys=True)]


def create_or_resume(
    storage: RDBStorage,
    study_name: str,
    directions: list[str],
    signature: Mapping[str, Any],
    sampler: optuna.samplers.BaseSampler | None = None,
) -> tuple[optuna.Study, bool]:
    """The study named `study_name`, created or resumed; True when it already existed.

    A study and its signature are written in two commits; a study found without a signature and
    without trials is one whose creation was interrupted (or is under way in a worker starting at the
    same moment), and its creation is completed here.

    Raises `SearchConfigError` if it exists with other directions or another signature.
    """
    signature = json.loads(json.dumps(signature))  # plain JSON types, as the storage returns them
    with setup_lock(storage.url):
        existing = {s.study_name for s in storage.get_all_studies()}
        if study_name not in existing:
            study = _retrying_races(
                lambda: optuna.create_study(
                    storage=storage,
                    study_name=study_name,
                    directions=cast(Any, directions),
                    sampler=sampler,
                    load_if_exists=True,
                )
            )
            if SIGNATURE_ATTR not in study.user_attrs:
                study.set_user_attr(SIGNATURE_ATTR, signature)
                return study, False
        study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler)
        stored_directions = [d.name.lower() for d in study.directions]
        if stored_directions != directions:
            raise SearchConfigError(
                f"Study {study_name!r} exists with directions {stored_directions}, not {directions}. "
                "Use another search.study_name (or storage) for a different set of objectives."
            )
        stored = study.user_attrs.get(SIGNATURE_ATTR)
        if stored is None:
            if study.get_trials(deepcopy=False):
                raise SearchConfigError(
                    f"Study {study_name!r} exists with trials but was not created by nas.search (no {SIGNATURE_ATTR}); "
                    "use another search.study_name."
                )
            log.info("Study %r was created but not signed (an interrupted start); completing its creation.", study_name)
            study.set_user_attr(SIGNATURE_ATTR, signature)
            return study, False
        diff = _differences(stored, signature)
        if diff:
            details = "; ".join(f"{k}: stored {stored.get(k)!r}, now {signature.get(k)!r}" for k in diff)
            raise SearchConfigError(
                f"Study {study_name!r} exists with a different {', '.join(diff)} ({details[:2000]}). "
                "Resume it with the same settings, or start a new study with another search.study_name."
            )
        return study, True


@contextmanager
def decision_lock(study: optuna.Study) -> Iterator[None]:
    """Serialise, across every worker of the study, the moment a worker decides whether its new trial takes a
    place in the budget: a worker deciding later sees the earlier one's decision (its trial in flight, or failed
    as skipped). PostgreSQL: an advisory lock; MySQL: a named lock; SQLite: the lock file beside the database
    (SQLite studies live on one host)."""
    engine = database_engine(study)
    if engine.dialect.name == "sqlite":
        # The database path as it is (str(engine.url) percent-encodes characters such as "=" and ",").
        with setup_lock(f"sqlite:///{engine.url.database or ':memory:'}"):
            yield
        return
    name = f"nas-decide:{study.study_name}"
    key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
    dialect = engine.dialect.name
    if dialect not in ("postgresql", "mysql", "mariadb"):
        log.warning("No cross-worker lock for %s databases: run one worker per study on it.", dialect)
        yield
        return
    with engine.connect() as connection:
        if dialect == "postgresql":
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": key})
        else:
            connection.execute(sqlalchemy.text("SELECT GET_LOCK(:name, 600)"), {"name": name[:64]})
        connection.commit()
        try:
            yield
        finally:
            if dialect == "postgresql":
                connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
            else:
                connection.execute(sqlalchemy.text("SELECT RELEASE_LOCK(:name)"), {"name": name[:64]})
            connection.commit()


# --- workers and their trials ---------------------------------------------------------------


# Containers on different machines can share a hostname (and pids): set this to tell their workers apart, or a
# live worker elsewhere could be taken for a dead one here.
HOST_ENV = "NAS_WORKER_HOST"


def host_name() -> str:
    return os.environ.get(HOST_ENV) or socket.gethostname()


def worker_id() -> str:
    """host:pid:start-time of this process (the start time tells a reused pid apart)."""
    me = psutil.Process()
    return f"{host_name()}:{me.pid}:{me.create_time():.2f}"


def _is_alive(worker: str) -> bool | None:
    """Whether a worker id names a live process; None when it ran on another host (unknown)."""
    host, pid, started = worker.rsplit(":", 2)
    if host != host_name():
        return None
    try:
        return f"{psutil.Process(int(pid)).create_time():.2f}" == started
    except (psutil.NoSuchProcess, ValueError):
        return False


# A trial records its worker right after it is created; one still without a worker this long after its
# start belonged to a process that died in between (a window of milliseconds).
ORPHAN_SECONDS = 60.0


def _worker_gone(trial: FrozenTrial, now: datetime.datetime) -> bool:
    """True when the trial's worker is known to be dead: a process of this host that no longer runs,
    or no worker recorded long after the trial started. Workers on other hosts: see the heartbeat."""
    worker = trial.user_attrs.get(WORKER_ATTR)
    if worker is None:
        return trial.datetime_start is not None and (now - trial.datetime_start).total_seconds() > ORPHAN_SECONDS
    return _is_alive(worker) is False


def fail_dead_trials(
    study: optuna.Study, trials: Sequence[FrozenTrial] | None = None, check_heartbeats: bool = True
) -> list[int]:
    """Mark as FAIL the running trials whose worker is gone; returns their numbers.

    Workers on this host are checked directly (a killed run is recovered at once, also one killed
    while its trial's parameters were being suggested); workers elsewhere through the storage's
    heartbeat (after its grace period), which each trial records from its creation on
    (`check_heartbeats`: a query of its own, which a loop may make less often). `trials`: the study's trials
    as just read, to spare a read.
    """
    now = datetime.datetime.now()
    failed = []
    running = (
        [t for t in trials if t.state == TrialState.RUNNING]
        if trials is not None
        else study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    )
    for t in running:
        if _worker_gone(t, now):
            # Public since Optuna 3: telling a trial by number, skipped if its worker finished it meanwhile.
            tell(study, t.number, state=TrialState.FAIL, skip_if_finished=True)
            failed.append(t.number)
    if check_heartbeats:
        with experimental_features():
            optuna.storages.fail_stale_trials(study)
    if failed:
        log.warning("Trials %s were running in a worker that died; marked FAIL (they will be redone).", failed)
    return failed


def alive_running(study: optuna.Study, trials: Sequence[FrozenTrial] | None = None) -> list[FrozenTrial]:
    """Running trials whose worker is (or may be, on another host) alive; of `trials` when given (read once)."""
    now = datetime.datetime.now()
    if trials is None:
        trials = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    return [t for t in trials if t.state == TrialState.RUNNING and not _worker_gone(t, now)]


class Heartbeat:
    """A worker's heartbeats (if the storage keeps them): `beat_once` when a trial is proposed, then, while it is
    evaluated (`beating`), every heartbeat interval from one background thread per worker: a thread started and
    joined per evaluation cost 0.6 ms of a trial's 8 ms of search work on a cheap objective.

    No beat of a trial is recorded once `beating` has returned (one in progress is waited for), so a finished
    trial is never beaten. `close()` ends the thread.
    """

    def __init__(self, storage: Any) -> None:
        self.storage = storage
        self.interval = storage.get_heartbeat_interval() if hasattr(storage, "get_heartbeat_interval") else None
        # Guards the fields below; held by the thread while it records a beat, so `beating` returns after it.
        self._changed = threading.Condition()
        self._trial: int | None = None
        self._last_beat = 0.0  # monotonic time of the trial's last beat (the start of `beating`, at first)
        self._closed = False
        self._thread: threading.Thread | None = None

    def beat_once(self, trial_id: int) -> None:
        """Record one heartbeat of the trial now (its proposal's, written with its parameters)."""
        if self.interval:
            self.storage.record_heartbeat(trial_id)

    @contextmanager
    def beating(self, trial_id: int) -> Iterator[None]:
        """Beat `trial_id` in the background while inside."""
        if not self.interval:
            yield
            return
        with self._changed:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
                self._thread.start()
            self._trial, self._last_beat = trial_id, time.monotonic()  # the first beat is the trial's creation
            self._changed.notify()
        try:
            yield
        finally:
            with self._changed:  # waits for a beat in progress
                self._trial = None

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        assert self.interval
        with self._changed:
            while not self._closed:
                if self._trial is None:
                    self._changed.wait()
                    continue
                due = self._last_beat + self.interval - time.monotonic()
                if due > 0:
                    self._changed.wait(due)
                    continue
                try:
                    self.storage.record_heartbeat(self._trial)
                except Exception as exc:  # the storage is away for a moment: the worker loop reports and waits
                    log.debug("Heartbeat of trial %d not recorded: %s", self._trial, exc)
                # The next one an interval after this one ended (the lock is released while waiting for it).
                self._last_beat = time.monotonic()
