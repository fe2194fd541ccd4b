"""Atomic file writes: a reader sees the old file or the new one, never half of either.

Every output file of the project goes through `write_text` (JSON, CSV, Markdown, HTML alike): the
content goes to a temporary file beside the target, is flushed and fsynced, then renamed over the
target (a rename within one folder is atomic on POSIX), and the folder entry is fsynced. A kill or a
full disk therefore leaves the previous version intact, and a write that fails raises one
`OutputWriteError` naming the file, the disk and the fix, not a traceback from deep inside `json`.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nas.errors import NASError, OutputWriteError

_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def disk_full_message(path: str | Path, exc: OSError) -> str:
    """What went wrong writing `path`, in one line that names the disk and how much is free."""
    folder = Path(path).resolve().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        free = f"{shutil.disk_usage(folder).free / 2**20:,.0f} MiB free"
    except OSError:
        free = "free space unknown"
    if exc.errno in _DISK_FULL_ERRNOS:
        return (
            f"No space left to write {path} (disk of {folder}: {free}; {exc.strerror}). Free some space or "
            "point paths.output_dir at another disk, then re-run the same command: finished work is kept."
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"Cannot write {path}: {exc.strerror} ({folder} is not writable). Choose a writable output folder."
    return f"Cannot write {path}: {exc.strerror or exc} ({free} on the disk of {folder})."


def disk_full(exc: BaseException | None) -> str | None:
    """One message for a full disk behind `exc` (followed through its causes), or None.

    Recognises our own `OutputWriteError`, a plain `OSError` (ENOSPC, EDQUOT, EFBIG) and SQLite's
    "database or disk is full" (the study database) wrapped by SQLAlchemy and Optuna.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OutputWriteError) and "No space left" in str(exc):
            return str(exc)
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL_ERRNOS:
            return disk_full_message(exc.filename or Path.cwd() / "(unknown file)", exc)
        if "database or disk is full" in str(exc):
            return (
                "No space left for the study database (SQLite: database or disk is full). Free some space, then "
                "re-run the same command: the evaluations stored so far are kept and the search resumes."
            )
        exc = exc.__cause__ or exc.__context__
    return None


def write_text(text: str, path: str | Path) -> Path:
    """Write `text` to `path` atomically (temporary file, fsync, rename); returns the path.

    Raises:
        OutputWriteError: the disk is full, the folder read-only, ...; the old file is left as it was.
    """
    path = Path(path)
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
        tmp_name = None
        _fsync_folder(path.parent)
    except OSError as exc:
        raise OutputWriteError(disk_full_message(path, exc)) from exc
    finally:
        if tmp_name is not None:
            Path(tmp_name).unlink(missing_ok=True)
    return path


def _fsync_folder(folder: Path) -> None:
    """Persist the rename itself (the folder entry); some file systems do not support it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json(data: Any, path: str | Path) -> Path:
    """`data` as indented JSON, written atomically."""
    return write_text(json.dumps(data, indent=2) + "\n", path)


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """One CSV line per row, written atomically; columns in first-seen key order; nested values as JSON."""
    fields: list[str] = []
    for row in rows:
        fields.extend(k for k in row if k not in fields)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: json.dumps(v) if isinstance(v, dict | list | tuple) else v for k, v in row.items()})
    return write_text(buffer.getvalue(), path)


class CorruptFileError(NASError, ValueError):
    """A file this project wrote that no longer parses (edited by hand, or written by an old version)."""


def read_json(path: str | Path, what: str = "file", fix: str = "delete it to recompute it") -> Any:
    """Parse a JSON file this project wrote; a damaged one raises one `CorruptFileError` saying what to do.

    Args:
        path: the file.
        what: what the file is, for the message (e.g. "stage record").
        fix: how to get past it.
    """
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptFileError(f"The {what} {path} is damaged and cannot be read ({exc}); {fix}.") from exc
