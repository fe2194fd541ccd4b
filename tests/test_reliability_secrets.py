"""Nothing leaked: a database password never reaches a file, a folder name, the console or W&B, and an
offline W&B run makes no network call."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from postgres import PASSWORD
from test_search_job import base_overrides

from nas.io.secrets import PASSWORD_ENV, password_of, redact, redact_url, strip_password, with_password

ROOT = Path(__file__).resolve().parents[1]


def search_command(tmp_path: Path, *extra: str) -> list[str]:
    overrides = [o for o in base_overrides(tmp_path) if not o.startswith(("wandb.mode", "paths.output_dir"))]
    return [sys.executable, "-m", "nas.search", *overrides, "search=random", "search.n_trials=3", *extra]


def run(command: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k != PASSWORD_ENV}
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, env={**clean, **env})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def files_containing(folder: Path, secret: str) -> list[str]:
    found = [str(p) for p in folder.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    found += [str(p) for p in folder.rglob(f"*{secret}*")]  # in a file or folder name
    return found


def test_url_helpers():
    url = "postgresql+psycopg://nas:s%40cret@db.example:5432/studies"
    assert password_of(url) == "s@cret"
    assert redact_url(url) == "postgresql+psycopg://nas:***@db.example:5432/studies"
    assert strip_password(url) == "postgresql+psycopg://nas@db.example:5432/studies"
    assert redact({"a": [url], "b": 3}) == {"a": [redact_url(url)], "b": 3}
    assert password_of("sqlite:////tmp/study.db") is None and redact_url("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"


def test_password_from_the_environment(monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, "from@env")
    assert with_password("postgresql+psycopg://nas@h/db") == "postgresql+psycopg://nas:from%40env@h/db"
    assert with_password("postgresql+psycopg://nas:given@h/db") == "postgresql+psycopg://nas:given@h/db"


@pytest.mark.parametrize("mode", ["run", "multirun"])
def test_a_password_in_the_storage_url_is_written_nowhere(tmp_path, postgres, mode):
    database = postgres.create_database()
    url = postgres.url(database, with_password=True)
    out = tmp_path / "out"
    if mode == "run":
        command = search_command(tmp_path, f"search.storage={url}", f"hydra.run.dir={out}")
    else:  # two jobs (seeds) sharing the storage: the password must not become a folder name either
        command = [*search_command(tmp_path, f"search.storage={url}", f"hydra.sweep.dir={out}"), "search.seed=0,1"]
        command.insert(3, "-m")
    proc = run([*command, "wandb.mode=offline", f"paths.output_dir={out}"])

    assert PASSWORD not in proc.stdout + proc.stderr
    assert files_containing(out, PASSWORD) == []
    assert list(out.rglob("wandb/offline-run-*")), "W&B wrote nothing to check"
    study_names = ["random-seed0"] if mode == "run" else ["random-seed0", "random-seed1"]
    for name in study_names:
        study = optuna.load_study(study_name=name, storage=url.replace("+psycopg", "+psycopg"))
        assert len([t for t in study.trials if t.user_attrs.get("evaluated")]) == 3
    if mode == "multirun":
        jobs = sorted(p.name for p in out.iterdir() if p.is_dir() and p.name[0].isdigit())
        assert [j[:2] for j in jobs] == ["0_", "1_"] and all("storage" not in j for j in jobs), jobs


def test_a_password_from_the_environment_reaches_the_server(tmp_path, postgres):
    database = postgres.create_database()
    out = tmp_path / "out"
    run(
        search_command(tmp_path, f"search.storage={postgres.url(database)}", f"hydra.run.dir={out}"),
        **{PASSWORD_ENV: PASSWORD},
    )
    study = optuna.load_study(study_name="random-seed0", storage=postgres.url(database, with_password=True))
    assert len(study.trials) >= 3 and files_containing(out, PASSWORD) == []


def test_an_offline_wandb_run_makes_no_network_call(tmp_path):
    strace = shutil.which("strace")
    if strace is None:
        if os.environ.get("NAS_CI"):
            pytest.fail("strace is missing; .ci/run installs it for CI.")
        pytest.skip("strace (Debian package) is not installed")
    out = tmp_path / "out"
    trace = tmp_path / "trace.txt"
    command = search_command(tmp_path, f"hydra.run.dir={out}", "wandb.mode=offline", f"paths.output_dir={out}")
    run([strace, "-f", "-qq", "-e", "trace=connect", "-o", str(trace), *command])
    assert list(out.rglob("wandb/offline-run-*"))
    connects = [line for line in trace.read_text().splitlines() if "connect(" in line]
    remote = [
        line
        for line in connects
        if re.search(r"AF_INET6?", line) and not re.search(r'inet_addr\("127\.|inet_pton\(AF_INET6, "::1"', line)
    ]
    assert remote == [], remote
