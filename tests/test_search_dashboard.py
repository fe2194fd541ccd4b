"""Our studies are plain Optuna studies: the Optuna dashboard serves them (named objectives, readable trial
attributes) and stock Optuna reads them in a process that cannot import this project."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import urllib.request
from wsgiref.simple_server import WSGIRequestHandler, make_server

import optuna_dashboard
import pytest
from test_search_job import base_overrides, compose_search

from nas.stages.search import run_search


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def study_url(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dashboard")
    run_search(compose_search([*base_overrides(tmp), "search=random", "search.n_trials=5"]), tmp / "run")
    return f"sqlite:///{tmp / 'run' / 'study.db'}"


def get(port: int, path: str):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
        return json.loads(response.read())


def test_the_dashboard_serves_our_study_over_http(study_url):
    server = make_server("127.0.0.1", 0, optuna_dashboard.wsgi(study_url), handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_port
        studies = get(port, "/api/studies")["study_summaries"]
        assert [s["study_name"] for s in studies] == ["random-seed0"]
        study = get(port, f"/api/studies/{studies[0]['study_id']}")
    finally:
        server.shutdown()
    assert study["objective_names"] == ["perplexity", "params"]  # the dashboard's name for metric names
    evaluated = [t for t in study["trials"] if t["state"] == "Complete"]
    assert len(evaluated) == 5
    attrs = {a["key"]: a["value"] for a in evaluated[0]["user_attrs"]}
    summary = json.loads(attrs["summary"])
    assert summary["sub_network"].startswith("L=") and summary["params"] == evaluated[0]["values"][1]
    assert "size_mb_bf16" in summary and "seconds" in attrs


def test_stock_optuna_reads_the_study_without_this_project(study_url, tmp_path):
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["nas"] = None  # as on a machine without this project: `import nas` fails
        try:
            import nas
        except ImportError:
            pass
        else:
            raise SystemExit("nas was importable")
        import optuna
        study = optuna.load_study(study_name="random-seed0", storage={study_url!r})
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        print(study.metric_names, len(done), done[0].user_attrs["summary"]["sub_network"], len(study.best_trials))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.startswith("['perplexity', 'params'] 5 L=")  # names, evaluations, a readable sub-network
    assert int(out.stdout.split()[-1]) >= 1  # Optuna's own Pareto front
