"""Optuna studies in a real database: opening storages, creating or resuming a study safely, and
recovering trials whose worker died.

A study records what it measures (search space, objectives, evaluation settings, weights) in its
user attributes; resuming with anything different is refused before a single evaluation, so an
existing study is never mixed with incompatible trials.
"""

from __future__ import annotations

import datetime
import json
import logging
import socket
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import optuna
import psutil
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from nas.errors import SearchConfigError

log = logging.getLogger(__name__)

SIGNATURE_ATTR = "nas_signature"
REFERENCE_ATTR = "nas_reference"
WORKER_ATTR = "worker"


def storage_url(value: str | None, output_dir: str | Path) -> str:
    """`search.storage`, or a SQLite file `study.db` in the run directory."""
    if value:
        return str(value)
    return f"sqlite:///{Path(output_dir).resolve() / 'study.db'}"


def _redacted(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1] if "@" in url else url


def open_storage(url: str, heartbeat_interval: int | None = 60, grace_period: int | None = None) -> RDBStorage:
    """An RDB storage (SQLite, PostgreSQL, MySQL, ...); trials of dead workers fail after the grace period."""
    engine_kwargs: dict[str, Any] = {}
    try:
        if url.startswith("sqlite"):
            path = url.split(":///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            # Several worker processes write to one file: wait for the lock instead of failing at once.
            engine_kwargs = {"connect_args": {"timeout": 120}}
        return RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
        )
    except Exception as exc:
        raise SearchConfigError(
            f"Cannot open the study storage search.storage={_redacted(url)}: {type(exc).__name__}: {exc}. "
            "Give a reachable SQLAlchemy URL, e.g. sqlite:////abs/path/study.db or "
            "postgresql://user:password@host:5432/db (with its driver installed), or leave search.storage "
            "unset for a SQLite file in the run directory."
        ) from exc


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

    Raises `SearchConfigError` if it exists with other directions or another signature.
    """
    signature = json.loads(json.dumps(signature))  # plain JSON types, as the storage returns them
    existing = {s.study_name: s for s in storage.get_all_studies()}
    if study_name in existing:
        study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler)
        stored_directions = [d.name.lower() for d in study.directions]
        if stored_directions != directions:
            raise SearchConfigError(
                f"Study {study_name!r} exists with directions {stored_directions}, not {directions}. "
                "Use another search.study_name (or storage) for a different set of objectives."
            )
        stored = study.user_attrs.get(SIGNATURE_ATTR)
        if stored is None:
            raise SearchConfigError(
                f"Study {study_name!r} exists but was not created by nas.search (no {SIGNATURE_ATTR}); "
                "use another search.study_name."
            )
        diff = _differences(stored, signature)
        if diff:
            details = "; ".join(f"{k}: stored {stored.get(k)!r}, now {signature.get(k)!r}" for k in diff)
            raise SearchConfigError(
                f"Study {study_name!r} exists with a different {', '.join(diff)} ({details[:2000]}). "
                "Resume it with the same settings, or start a new study with another search.study_name."
            )
        return study, True
    study = optuna.create_study(
        storage=storage, study_name=study_name, directions=cast(Any, directions), sampler=sampler, load_if_exists=True
    )
    study.set_user_attr(SIGNATURE_ATTR, signature)
    return study, False


# --- workers and their trials ---------------------------------------------------------------


def worker_id() -> str:
    """host:pid:start-time of this process (the start time tells a reused pid apart)."""
    me = psutil.Process()
    return f"{socket.gethostname()}:{me.pid}:{me.create_time():.2f}"


def _is_alive(worker: str) -> bool | None:
    """Whether a worker id names a live process; None when it ran on another host (unknown)."""
    host, pid, started = worker.rsplit(":", 2)
    if host != socket.gethostname():
        return None
    try:
        return f"{psutil.Process(int(pid)).create_time():.2f}" == started
    except (psutil.NoSuchProcess, ValueError):
        return False


def fail_dead_trials(study: optuna.Study) -> list[int]:
    """Mark as FAIL the running trials whose worker is gone; returns their numbers.

    Workers on this host are checked directly (a killed run is recovered at once); workers elsewhere
    through the storage's heartbeat (after its grace period).
    """
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = t.user_attrs.get(WORKER_ATTR)
        if worker and _is_alive(worker) is False:
            try:
                study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
                failed.append(t.number)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass
    optuna.storages.fail_stale_trials(study)
    if failed:
        log.warning("Trials %s were running in a worker that died; marked FAIL (they will be redone).", failed)
    return failed


def alive_running(study: optuna.Study) -> list[FrozenTrial]:
    """Running trials whose worker is (or may be, on another host) alive.

    A trial records its worker right after it is asked for; one still without a worker a minute later
    belonged to a process that died in between, and is not counted.
    """
    now = datetime.datetime.now()
    alive = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = t.user_attrs.get(WORKER_ATTR)
        if worker is None:
            if t.datetime_start is None or (now - t.datetime_start).total_seconds() < 60:
                alive.append(t)
        elif _is_alive(worker) is not False:
            alive.append(t)
    return alive


@contextmanager
def heartbeat(storage: Any, trial_id: int) -> Iterator[None]:
    """Record the trial's heartbeat in the background while it is evaluated (if the storage has one)."""
    interval = storage.get_heartbeat_interval() if hasattr(storage, "get_heartbeat_interval") else None
    if not interval:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while True:
            storage.record_heartbeat(trial_id)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
