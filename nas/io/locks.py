"""An exclusive lock on a run directory, so two jobs never run the same stages in one folder.

`flock` on `<folder>/.lock`: the kernel releases it when its process ends, however it ends, so a
killed run never leaves a stale lock. The file records who holds it, for the message of the next
job that finds it taken.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from nas.errors import NASError

LOCK_FILE = ".lock"


class RunDirLockedError(NASError, RuntimeError):
    """Another job is working in this run directory."""


class RunDirLock:
    """`with RunDirLock(folder, "pipeline"):` holds `folder` for this process, or raises
    `RunDirLockedError` naming the job that holds it."""

    def __init__(self, folder: str | Path, job: str) -> None:
        self.folder = Path(folder)
        self.job = job
        self._handle: IO[str] | None = None

    def __enter__(self) -> RunDirLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        handle = open(self.folder / LOCK_FILE, "a+")  # noqa: SIM115 - held open for the lock's life
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = _describe(handle.read())
            handle.close()
            raise RunDirLockedError(
                f"{self.folder} is in use by {holder}. Wait for it to finish (it resumes from there when re-run), "
                "or run with another name=... for a separate run directory."
            ) from None
        handle.seek(0)
        handle.truncate()
        record = {
            "job": self.job,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.datetime.now().isoformat(timespec="seconds"),
        }
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        self._handle = handle
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


def _describe(text: str) -> str:
    try:
        record: dict[str, Any] = json.loads(text)
        return f"a {record['job']} job (pid {record['pid']} on {record['host']}, since {record['since']})"
    except (ValueError, KeyError, TypeError):
        return "another job"
