"""The search under faults: NaN results end, a kill at any moment (creating the study, suggesting
parameters) is recovered, workers that start together share one new study, a full disk is one message,
and bad input is refused before the model loads."""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
from killpoints import run_killed, was_killed
from optuna.trial import TrialState
from test_search_job import base_overrides, check_no_repeats, compose_search, load, real

from nas.errors import SearchConfigError, SearchSpaceError
from nas.search.objective_scorer import ObjectiveScorer
from nas.search.outputs import write_outputs
from nas.search.study import REFERENCE_ATTR, SIGNATURE_ATTR, create_or_resume, open_storage
from nas.search.trials import EVALUATED_ATTR, NON_FINITE_ATTR
from nas.stages.search import run_search

ROOT = Path(__file__).resolve().parents[1]


# --- non-finite results --------------------------------------------------------------------------


def test_nan_sub_networks_are_counted_once_and_left_off_the_front(tmp_path, monkeypatch):
    original = ObjectiveScorer.__call__
    calls: dict[str, int] = {}

    def nan_below_four_layers(self, sub):
        values, details = original(self, sub)
        if sub is not None:
            key = sub.to_json()
            calls[key] = calls.get(key, 0) + 1
            assert sum(calls.values()) <= 30, "the search keeps re-evaluating NaN sub-networks"
            if sub.num_layers < 4:
                values = {**values, "perplexity": math.nan}
        return values, details

    monkeypatch.setattr(ObjectiveScorer, "__call__", nan_below_four_layers)
    out = tmp_path / "run"
    overrides = [*base_overrides(tmp_path), "search=random", "search_space=llama_nas"]
    summary = run_search(compose_search(overrides), out)

    study = load(out, "random-seed0")
    broken = [t for t in study.get_trials(states=(TrialState.FAIL,)) if t.user_attrs.get(EVALUATED_ATTR)]
    assert broken and all(t.user_attrs[NON_FINITE_ATTR]["perplexity"] == "nan" for t in broken)
    assert len(real(study)) + len(broken) == 10 == summary["evaluations"]  # both count against the budget
    assert sorted(summary["non_finite"]) == sorted(t.number for t in broken)
    assert max(calls.values()) == 1  # nothing evaluated twice, NaN ones included
    pareto = json.loads((out / "pareto.json").read_text())
    assert all(row["subnetwork"]["layers"] and len(row["subnetwork"]["layers"]) == 4 for row in pareto)
    assert math.isfinite(summary["hypervolume"])

    from nas.analysis.report import analyze_run

    analysis = analyze_run(out)
    assert any("NaN or infinite" in note and f"trial {broken[0].number}" in note for note in analysis["notes"])
    assert "perplexity=nan" in (out / "report" / "report.md").read_text()


def test_a_nan_reference_stops_the_search_before_it_starts(tmp_path, monkeypatch):
    from nas import load_model

    def broken_model(cfg, worker_index=0):
        model, tokenizer = load_model("tiny_llama")
        with torch.no_grad():
            model.model.norm.weight[3] = float("nan")  # one NaN weight: every logit is NaN
        return model, tokenizer

    monkeypatch.setattr("nas.search.context.load_supernet", broken_model)
    out = tmp_path / "run"
    with pytest.raises(
        SearchConfigError, match=r"unmodified model \(.*\) scores perplexity=nan.*stops before it starts"
    ):
        run_search(compose_search(base_overrides(tmp_path)), out)
    study = load(out, "nsga2-seed0")
    assert not study.trials and REFERENCE_ATTR not in study.user_attrs


# --- kills at chosen moments ---------------------------------------------------------------------

SEARCH = """
from test_search_job import compose_search
from nas.stages.search import run_search
run_search(compose_search({overrides!r}), {out!r})
"""


def test_a_kill_between_creating_and_signing_the_study_is_recovered(tmp_path):
    overrides = [*base_overrides(tmp_path), "search=random", "search.n_trials=4"]
    out = tmp_path / "run"
    proc = run_killed(
        SEARCH.format(overrides=overrides, out=str(out)),
        at="optuna.study.study:Study.set_user_attr",
        when=f"args[1] == {SIGNATURE_ATTR!r}",
    )
    assert was_killed(proc), proc.stderr[-3000:]
    study = load(out, "random-seed0")
    assert SIGNATURE_ATTR not in study.user_attrs and not study.trials  # created, not signed

    summary = run_search(compose_search(overrides), out)
    assert summary["evaluations"] == 4 and SIGNATURE_ATTR in load(out, "random-seed0").user_attrs


def test_a_kill_while_parameters_are_suggested_is_recovered(tmp_path):
    overrides = [*base_overrides(tmp_path), "search.n_trials=14", "search.population_size=6"]
    overrides += ["search_space=llama_nas"]
    out = tmp_path / "run"
    script = SEARCH.format(overrides=overrides, out=str(out))
    # llama_nas has 5 parameters on the tiny model (num_layers, mlp_0..mlp_3): once 8 evaluations are
    # stored, the next trial dies inside the sampler, after suggesting two of them (held by the worker, to be
    # written together with the others: the trial is stored with its worker and no parameters).
    eight_done = "len([t for t in args[0].study.get_trials(deepcopy=False) if t.user_attrs.get('evaluated')]) >= 8"
    proc = run_killed(script, at="optuna.trial._trial:Trial.suggest_int", when=f"{eight_done} and args[1] == 'mlp_1'")
    assert was_killed(proc), proc.stderr[-3000:]
    study = load(out, "nsga2-seed0")
    partial = study.get_trials(states=(TrialState.RUNNING,))
    assert len(partial) == 1 and len(partial[0].params) < 5 and partial[0].user_attrs.get("worker")
    write_outputs_of(study, overrides)  # a reader of trials tolerates the incomplete one

    for _ in range(2):  # the first re-run finishes; the second finds nothing to do
        summary = run_search(compose_search(overrides), out)
    study = load(out, "nsga2-seed0")
    assert len(real(study)) == 14 == summary["evaluations"]
    assert study.trials[partial[0].number].state == TrialState.FAIL
    assert not study.get_trials(states=(TrialState.RUNNING,))
    check_no_repeats(study)
    rows = (out / "trials.csv").read_text().splitlines()
    assert len(rows) == len(study.trials) + 1


def write_outputs_of(study: optuna.Study, overrides: list[str]) -> None:
    from nas import load_model
    from nas.search.encoding import SearchEncoding
    from nas.search.objectives import parse_objectives
    from nas.supernet.search_space import SearchSpace

    cfg = compose_search(overrides)
    model, _ = load_model("tiny_llama")
    encoding = SearchEncoding(SearchSpace.from_config(cfg.search_space, model.config))
    write_outputs(study, parse_objectives(cfg.objectives), encoding, Path(cfg.paths.output_dir) / "partial")


def test_a_killed_run_loses_only_its_trial_in_flight(tmp_path):
    """The README's promise, at the moment an evaluation is told to the study."""
    overrides = [*base_overrides(tmp_path), "search=random", "search.n_trials=6"]
    out = tmp_path / "run"
    proc = run_killed(  # the 4th evaluation is scored, then the process dies as it tells the values
        SEARCH.format(overrides=overrides, out=str(out)),
        at="nas.search.worker:tell",  # the worker's tell (`optuna_compat.tell`): args are (study, trial, values)
        when="len(args) > 2",
        nth=4,
    )
    assert was_killed(proc), proc.stderr[-3000:]
    study = load(out, "random-seed0")
    assert len(real(study)) == 3 and len(study.get_trials(states=(TrialState.RUNNING,))) == 1
    summary = run_search(compose_search(overrides), out)
    assert summary["evaluations"] == 6 and summary["evaluated_this_run"] == 3
    study = load(out, "random-seed0")
    assert not study.get_trials(states=(TrialState.RUNNING,))
    check_no_repeats(study)


# --- workers starting together -------------------------------------------------------------------


def _start_together(urls: list[str], barrier, results) -> None:
    """One worker: for each new database, wait for the others, then open the storage and the study."""
    for url in urls:
        try:
            barrier.wait(timeout=300)
            storage = open_storage(url)
            study, _ = create_or_resume(storage, "together", ["minimize", "minimize"], {"space": "x"})
            results.put("ok" if study.user_attrs[SIGNATURE_ATTR] == {"space": "x"} else "unsigned")
        except Exception as exc:  # reported to the parent, which fails the test with it
            results.put(f"{type(exc).__name__}: {exc}"[:300])


def test_three_workers_starting_together_on_a_new_sqlite_study(tmp_path):
    context = mp.get_context("spawn")
    urls = [f"sqlite:///{tmp_path / f'study{i}.db'}" for i in range(5)]  # without the lock, 4 of 5 failed
    barrier, results = context.Barrier(3), context.Queue()
    workers = [context.Process(target=_start_together, args=(urls, barrier, results)) for _ in range(3)]
    for w in workers:
        w.start()
    outcomes = [results.get(timeout=300) for _ in range(3 * len(urls))]
    for w in workers:
        w.join(timeout=60)
    assert outcomes == ["ok"] * 15, outcomes


# --- a full disk --------------------------------------------------------------------------------


def test_a_full_disk_is_one_message_and_the_outputs_stay(tmp_path):
    """A real full disk: a private mount namespace with an 8 MB tmpfs, filled mid-search (tests/scripts/)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    overrides = [*base_overrides(tmp_path), "search=random"]  # the text file stays outside the small disk
    driver = ROOT / "tests" / "scripts" / "full_disk.py"
    mount = f'mount -t tmpfs -o size=8m tmpfs "$0" && exec {sys.executable} {driver} "$0" "$@"'
    proc = subprocess.run(
        ["unshare", "-rm" if os.geteuid() else "-m", "sh", "-c", mount, str(disk), *overrides],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"the driver failed (a private mount namespace is needed): {proc.stderr[-3000:]}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    stderr = result["stderr"]
    assert result["rc"] == 1 and "Traceback" not in stderr and "Logging error" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "No space left" in errors[0] and "re-run the same command" in errors[0], stderr
    assert result["same"]  # the outputs of the earlier run are left as they were
    assert result["evaluations"] == 8  # with room again, the same command resumes and finishes


# --- bad input, before the model loads -----------------------------------------------------------


def refuse_model_loading(monkeypatch) -> None:
    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the config was checked")

    monkeypatch.setattr("nas.search.context.load_supernet", no_model)


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        (["objective=accuracy_vs_size", "limit=0"], Exception, r"limit=0: use a positive whole number"),
        (["objective=accuracy_vs_size", "limit=-1"], Exception, r"limit=-1"),
        (["objective=accuracy_vs_size", "limit=abc"], Exception, r"limit='abc'"),
        (["search.population_size=0"], SearchConfigError, r"population_size=0: .*>= 2"),
        (["search.n_trials=abc"], SearchConfigError, r"n_trials='abc'"),
        (["search_space.num_layers=null", "search_space.mlp=null"], SearchSpaceError, "nothing to search"),
    ],
    ids=["limit-0", "limit-negative", "limit-text", "population-0", "trials-text", "all-fixed"],
)
def test_bad_search_input_fails_before_the_model_loads(tmp_path, monkeypatch, overrides, error, message):
    refuse_model_loading(monkeypatch)
    cfg = compose_search([*base_overrides(tmp_path), "search_space=llama_nas", *overrides])
    with pytest.raises(error, match=message):
        run_search(cfg, tmp_path / "run")


def test_bad_evaluate_limit_fails_before_the_model_loads(tmp_path, monkeypatch):
    from hydra import compose, initialize_config_dir

    from nas.stages.evaluate import run_evaluation

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the limit was checked")

    monkeypatch.setattr("nas.stages.evaluate.instantiate", no_model)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("evaluate", overrides=["model=tiny_llama", "limit=0", "speed=null"])
    with pytest.raises(Exception, match="limit=0: use a positive whole number"):
        run_evaluation(cfg, tmp_path)
