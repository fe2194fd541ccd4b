"""Independent workers, as on separate machines: `python -m nas.search` processes that share nothing but the
storage URL (own run directories), on SQLite and on a real PostgreSQL server. One is SIGKILLed in the middle of
an evaluation and posed as another host, so only the storage's heartbeat can recover its trial. And a
PostgreSQL server stopped and restarted under a running search: the worker waits and finishes, nothing lost."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from killpoints import _PRELUDE
from optuna.trial import TrialState
from test_search_job import ROOT, base_overrides, check_no_repeats, compose_search, real

from nas.search.objective_scorer import ObjectiveScorer
from nas.stages.search import run_search

N_TRIALS = 9
ENTRY = "import sys\nfrom nas.search.__main__ import main\nsys.argv = ['nas.search', *{args!r}]\nmain()\n"


def worker_args(tmp: Path, url: str, index: int) -> list[str]:
    overrides = [o for o in base_overrides(tmp) if not o.startswith("paths.output_dir")]
    return [
        *overrides,
        "search=random",
        f"search.n_trials={N_TRIALS}",
        "search.heartbeat_interval=1",
        "search.grace_period=3",
        f"search.storage={url}",
        f"hydra.run.dir={tmp / f'worker{index}'}",
    ]


def start(args: list[str], kill_at_evaluation: int | None = None, host: str | None = None) -> subprocess.Popen[str]:
    code = ENTRY.format(args=args)
    if kill_at_evaluation is not None:  # SIGKILLed as it starts its n-th evaluation of a sub-network
        code = (
            _PRELUDE.format(
                tests=str(ROOT / "tests"),
                at="nas.search.objective_scorer:ObjectiveScorer.__call__",
                when="args[1] is not None",
                nth=kill_at_evaluation,
            )
            + code
        )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    if host:
        env["NAS_WORKER_HOST"] = host
    return subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def wait_for_a_trial_of(url: str, worker_prefix: str, process: subprocess.Popen[str], timeout: float = 300) -> None:
    """Until the study holds a trial of the worker named `worker_prefix...` (or that worker has exited)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            trials = optuna.load_study(study_name="random-seed0", storage=url).get_trials(deepcopy=False)
        except Exception:  # the storage or the study is not created yet (the worker creates them)
            trials = []
        if any(t.user_attrs.get("worker", "").startswith(worker_prefix) for t in trials):
            return
        time.sleep(0.2)


def storage_url(kind: str, tmp: Path, request: pytest.FixtureRequest) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp / 'shared' / 'study.db'}"
    server = request.getfixturevalue("postgres")
    return server.url(server.create_database(), with_password=True)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_three_workers_one_killed_mid_evaluation(tmp_path, request, kind):
    url = storage_url(kind, tmp_path, request)
    (tmp_path / "shared").mkdir()
    killed = start(worker_args(tmp_path, url, 0), kill_at_evaluation=2, host="another-machine")
    # The others start once it has a trial: a search is fast enough now for two workers to finish the whole
    # budget while a third is still loading its model, and then nobody would be killed mid-evaluation.
    wait_for_a_trial_of(url, "another-machine:", killed)
    survivors = [start(worker_args(tmp_path, url, i)) for i in (1, 2)]
    outputs = [p.communicate(timeout=600)[0] for p in (killed, *survivors)]
    assert killed.returncode == -9, outputs[0][-3000:]
    assert all(p.returncode == 0 for p in survivors), "\n".join(o[-3000:] for o in outputs[1:])

    study = optuna.load_study(study_name="random-seed0", storage=url)
    evaluated = real(study)
    assert len(evaluated) == N_TRIALS  # exactly the budget of real evaluations
    check_no_repeats(study)  # no sub-network evaluated twice
    # The killed worker's trial in flight: failed by the heartbeat's grace period (its host is not this one).
    lost = [t for t in study.trials if t.user_attrs.get("worker", "").startswith("another-machine:")]
    in_flight = [t for t in lost if not {"evaluated", "duplicate_of", "skipped"} & set(t.user_attrs)]
    assert len(in_flight) == 1 and in_flight[0].state == TrialState.FAIL
    # The outputs are written once, by the worker that finished last; the other says where they are.
    written = [d for d in (tmp_path / "worker1", tmp_path / "worker2") if (d / "summary.json").is_file()]
    assert len(written) == 1, outputs[1:]
    assert f'"evaluations": {N_TRIALS}' in (written[0] / "summary.json").read_text()
    assert any("its outputs are written by the worker that finished last" in o for o in outputs[1:])


def test_a_restarted_database_server_is_waited_for(tmp_path, postgres):
    url = postgres.url(postgres.create_database(), with_password=True)
    original, calls = ObjectiveScorer.__call__, []

    def server_restarts_during_third_evaluation(self, sub):
        if sub is not None:
            calls.append(sub)
            if len(calls) == 3:  # the tell after this evaluation meets a stopped server
                postgres.stop()
                threading.Timer(6.0, postgres.start).start()
        return original(self, sub)

    overrides = [*base_overrides(tmp_path), "search=random", "search.storage_patience=120", f"search.storage={url}"]
    ObjectiveScorer.__call__ = server_restarts_during_third_evaluation
    try:
        start_time = time.monotonic()
        summary = run_search(compose_search(overrides), tmp_path / "run")
    finally:
        ObjectiveScorer.__call__ = original
    assert time.monotonic() - start_time > 5  # it did wait for the server
    study = optuna.load_study(study_name="random-seed0", storage=url)
    assert len(real(study)) == 10 == summary["evaluations"]  # the third evaluation was recorded, not lost
    check_no_repeats(study)
