"""SQLite studies in write-ahead-log mode, where the file system allows it.

SQLite's default rollback journal syncs the disk several times per transaction: on this machine a trial's
three transactions took 17 ms, a third of the search's own work per trial on a cheap objective; in WAL mode
with `synchronous=NORMAL` (SQLite's recommended pairing) they take 6 ms. A transaction committed in this mode
survives the process being killed; after a power loss or an OS crash the last ones may be rolled back (never
corrupted), which costs a search at most its last evaluations. Readers (the dashboard, a report) no longer
block the workers writing.

WAL needs memory shared by every process using the database, so it is used only on a local file system: on
NFS, Lustre, GPFS, CIFS and the like the database keeps SQLite's default journal (and several machines should
share a PostgreSQL study instead). A search checkpoints the log into the database file when it ends, so
`study.db` alone holds the study (a copy of the folder needs no `-wal` file).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import sqlalchemy

log = logging.getLogger(__name__)

# File systems whose locking or shared memory SQLite's WAL cannot rely on (types as /proc/mounts names them).
NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "lustre",
        "gpfs",
        "beegfs",
        "ceph",
        "glusterfs",
        "fuse.glusterfs",
        "fuse.sshfs",
        "fuse.s3fs",
        "9p",
        "afs",
        "panfs",
        "pvfs2",
        "orangefs",
        "ocfs2",
        "gfs2",
        "wekafs",
    }
)


def filesystem_type(path: Path, mounts: str = "/proc/mounts") -> str | None:
    """The type of the file system holding `path` (its longest mount point); None where unknown (no
    /proc/mounts: not Linux)."""
    try:
        lines = Path(mounts).read_text().splitlines()
    except OSError:
        return None
    target = os.path.realpath(path)
    best, kind = "", None
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


def use_write_ahead_log(engine: Any, database: Path) -> bool:
    """Put the SQLite database of `engine` in WAL mode with `synchronous=NORMAL` on every connection, unless
    it lives on a network file system; returns whether it did."""
    kind = filesystem_type(database.parent)
    if kind in NETWORK_FILESYSTEMS:
        log.info("%s is on a %s file system: keeping SQLite's default journal (no WAL).", database, kind)
        return False

    @sqlalchemy.event.listens_for(engine, "connect")
    def _write_ahead(connection: Any, _record: Any) -> None:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
        except Exception as exc:  # a read-only database or folder: it is read as it is
            log.debug("SQLite WAL not enabled on %s: %s", database, exc)

    engine.dispose()  # connections opened before the listener get it when they are opened again
    return True


def checkpoint(engine: Any) -> None:
    """Move the write-ahead log into the database file (and empty it), so the file alone holds the study."""
    if engine.dialect.name != "sqlite":
        return
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlalchemy.exc.SQLAlchemyError as exc:  # another worker is writing: it checkpoints when it ends
        log.debug("SQLite checkpoint skipped: %s", exc)
