"""An installed wheel (not the checkout) runs: its configs and experiments travel inside the package, its
console scripts work from any folder, and `--help` answers without loading the models' libraries."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nas.supernet.subnetwork import SubNetwork

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The project built as a wheel and installed into a folder of its own; (site folder, environment)."""
    tmp = tmp_path_factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = [*pip, "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist")]
    subprocess.run(build, check=True, cwd=tmp, capture_output=True, timeout=600)
    wheel = next((tmp / "dist").glob("nas-*.whl"))
    site = tmp / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(site)}  # ahead of the editable checkout on sys.path
    return site, env


def test_the_installed_package_is_the_one_that_runs(installed, tmp_path):
    site, env = installed
    where = subprocess.run(
        [sys.executable, "-c", "import nas, nas.io.locations as l; print(nas.__file__); print(l.config_dir())"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert where[0].startswith(str(site)) and where[1] == str(site / "nas" / "_bundled" / "conf")


def test_a_console_script_of_the_wheel_exports_a_sub_network(installed, tmp_path):
    site, env = installed
    out = tmp_path / "exported"
    command = [str(site / "bin" / "nas-export"), "model=tiny_llama", "subnet=smallest", f"out_dir={out}"]
    proc = subprocess.run(
        [*command, f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert SubNetwork.load(out).num_layers >= 1 and (out / "model.safetensors").is_file()


def test_help_lists_the_experiments_in_seconds(installed, tmp_path):
    site, env = installed
    start = time.perf_counter()
    proc = subprocess.run(
        [str(site / "bin" / "nas-pipeline"), "--help"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "experiments: " in proc.stdout and "quickstart" in proc.stdout
    groups = [line.split(":")[0] for line in proc.stdout.splitlines() if line and not line.startswith((" ", "=", "-"))]
    assert not {".venv", ".git", "tests", "multirun_outputs", "nas"} & set(groups), groups  # only experiments/
    assert seconds < 20, f"--help took {seconds:.1f} s"


def test_help_in_the_checkout_sees_only_the_experiments_folder():
    """The checkout's root holds .venv, .git, tests, run outputs: none may become a config group to walk."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "nas.export", "--help"], cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-2000:]
    groups = [line.split(":")[0] for line in proc.stdout.splitlines() if line and not line.startswith((" ", "=", "-"))]
    assert "experiments" in groups and not {".venv", ".git", "tests", "multirun_outputs", "benchmarks"} & set(groups)
    assert seconds < 20, f"--help took {seconds:.1f} s"
