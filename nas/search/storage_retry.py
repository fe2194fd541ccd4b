"""Riding out a study storage that goes away for a while (a database server restarted, a network blip).

A worker that cannot reach the storage says so once, retries every few seconds for `search.storage_patience`
seconds, and then fails with an error that says what survived: every completed trial is in the database, and
the same command resumes. A finished evaluation waits for the storage rather than being lost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import sqlalchemy.exc

from nas.errors import NASError
from nas.io.atomic import disk_full

log = logging.getLogger(__name__)

T = TypeVar("T")
RETRY_SECONDS = 2.0


class StorageUnavailableError(NASError):
    """The study storage stayed unreachable for longer than the worker's patience."""


def is_outage(exc: BaseException) -> bool:
    """A lost or refused connection (or a locked SQLite file), as opposed to a bug or a bad request; also when
    Optuna re-raised it as its own `StorageInternalError`. A full disk is not an outage: waiting does not free it."""
    if disk_full(exc) is not None:
        return False
    seen: BaseException | None = exc
    for _ in range(5):  # the cause chain, a few links deep
        if seen is None:
            return False
        if isinstance(seen, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError):
            return True
        if isinstance(seen, sqlalchemy.exc.DBAPIError) and seen.connection_invalidated:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class StoragePatience:
    """Runs storage actions, retrying them through an outage of up to `patience` seconds.

    Args:
        where: the storage as it may be shown (URL without password).
        patience: seconds to keep retrying one action before giving up.
    """

    def __init__(self, where: str, patience: float = 300.0) -> None:
        self.where = where
        self.patience = patience
        self.outages = 0  # outages ridden out (for logs and tests)

    def run(self, action: Callable[[], T], what: str) -> T:
        start: float | None = None
        while True:
            try:
                result = action()
            except Exception as exc:
                if not is_outage(exc):
                    raise
                now = time.monotonic()
                if start is None:
                    start = now
                    log.warning(
                        "The study storage %s is unreachable while %s (%s: %s); retrying every %.0f s for up to %.0f s "
                        "(search.storage_patience).",
                        self.where,
                        what,
                        type(exc).__name__,
                        str(exc).splitlines()[0][:200],
                        RETRY_SECONDS,
                        self.patience,
                    )
                if now - start > self.patience:
                    raise StorageUnavailableError(
                        f"The study storage {self.where} stayed unreachable for {self.patience:.0f} s while {what}. "
                        "Every completed evaluation is in the database; re-run the same command when it is back to "
                        "resume (raise search.storage_patience to wait longer)."
                    ) from exc
                time.sleep(RETRY_SECONDS)
                continue
            if start is not None:
                self.outages += 1
                log.warning("The study storage is back after %.0f s; continuing.", time.monotonic() - start)
            return result
