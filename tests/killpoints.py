"""Kill a process at a chosen moment, not after a guessed sleep.

`run_killed(script, at="optuna.study.study:Study.set_user_attr", when="args[1] == 'x'")` runs `script` in
a fresh interpreter in which the function `at` first SIGKILLs the process on its `nth` call for which
the condition `when` (an expression over `args` and `kwargs`) holds. The kill lands exactly inside the
window under test (between two commits, while parameters are suggested, mid-evaluation), every time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_PRELUDE = """
import importlib, os, signal, sys
sys.path.insert(0, {tests!r})
_module, _, _path = {at!r}.partition(":")
_owner = importlib.import_module(_module)
*_parents, _name = _path.split(".")
for _part in _parents:
    _owner = getattr(_owner, _part)
_original = getattr(_owner, _name)
_calls = [0]

def _killpoint(*args, **kwargs):
    if eval({when!r}, {{"args": args, "kwargs": kwargs}}):
        _calls[0] += 1
        if _calls[0] == {nth}:
            os.kill(os.getpid(), signal.SIGKILL)
    return _original(*args, **kwargs)

setattr(_owner, _name, _killpoint)
"""


def run_killed(
    script: str, at: str, when: str = "True", nth: int = 1, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `script` with a kill point; returns the finished process (returncode -9 when it was killed)."""
    code = _PRELUDE.format(tests=str(ROOT / "tests"), at=at, when=when, nth=nth) + textwrap.dedent(script)
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
    )


def was_killed(process: subprocess.CompletedProcess[str]) -> bool:
    return process.returncode == -signal.SIGKILL
