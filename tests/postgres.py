"""A throw-away PostgreSQL server for the tests: Debian's `postgresql` binaries, a cluster initialised in
a temporary folder, run by an unprivileged user when the tests run as root (as CI does), with password
authentication over TCP on a free local port.

Missing binaries skip the tests that need the server, with the reason, except under CI (`NAS_CI=1`,
set by `.ci/run`, which installs the package): there they fail.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

USER = "nas"
PASSWORD = "pw-" + "9f3c1e7d5b"  # a recognisable secret: tests grep every written file for it


def _binaries() -> Path | None:
    for candidate in [shutil.which("pg_ctl"), *sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)]:
        if candidate and Path(candidate).with_name("initdb").exists():
            return Path(candidate).resolve().parent
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresServer:
    """A running server; `url(db)` names a database without its password (see `PASSWORD`)."""

    port: int
    folder: Path
    runner: list[str]
    bin_dir: Path
    _count: int = 0

    def url(self, database: str, driver: str = "postgresql+psycopg", with_password: bool = False) -> str:
        auth = f"{USER}:{PASSWORD}" if with_password else USER
        return f"{driver}://{auth}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        import psycopg

        self._count += 1
        name = f"study_{self._count}"
        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=USER, password=PASSWORD, dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return name

    def pg_ctl(self, *args: str) -> None:
        subprocess.run(
            [*self.runner, str(self.bin_dir / "pg_ctl"), "-D", str(self.folder / "data"), *args],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def stop(self) -> None:
        self.pg_ctl("stop", "-m", "fast", "-w")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self.pg_ctl("start", "-w", "-l", str(self.folder / "server.log"), "-o", options)


def start_postgres() -> PostgresServer:
    bin_dir = _binaries()
    if bin_dir is None:
        reason = "PostgreSQL binaries (Debian package postgresql) are not installed"
        if os.environ.get("NAS_CI"):
            pytest.fail(f"{reason}; .ci/run installs them for CI.")
        pytest.skip(reason)
    folder = Path(tempfile.mkdtemp(prefix="nas-pg-"))
    password_file = folder / "password"
    password_file.write_text(PASSWORD + "\n")
    runner: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        owner = pwd.getpwnam("postgres" if _has_user("postgres") else "nobody")
        os.chmod(folder, 0o755)
        for path in (folder, password_file):
            os.chown(path, owner.pw_uid, owner.pw_gid)
        runner = ["setpriv", f"--reuid={owner.pw_uid}", f"--regid={owner.pw_gid}", "--clear-groups", "--"]
    subprocess.run(
        [
            *runner,
            str(bin_dir / "initdb"),
            "-D",
            str(folder / "data"),
            "-U",
            USER,
            f"--pwfile={password_file}",
            "--auth=scram-sha-256",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    password_file.unlink()
    server = PostgresServer(_free_port(), folder, runner, bin_dir)
    server.start()
    return server


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False
