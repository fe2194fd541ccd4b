"""Constrained searches on the tiny model: every algorithm keeps to an analytic budget (no proposal that breaks
it is evaluated), measured constraints are recorded and respected by fronts and Optuna's own readers, and a
budget the space cannot meet is refused before anything is evaluated."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from test_search_job import base_overrides, compose_search, load, real

from nas.errors import SearchConfigError
from nas.search.constraints import parse_constraints
from nas.search.linas import LinasSampler
from nas.search.objectives import parse_objectives
from nas.stages.search import run_search

PARAMS_MAX = 150000  # the tiny model has 164,480 parameters; its 4-layer sub-networks with wide MLPs exceed this
PERPLEXITY_MAX = 340.0  # about the middle of the tiny model's sub-networks on the test text: some break it


@pytest.mark.parametrize("algorithm", ["nsga2", "linas", "random"])
def test_every_algorithm_respects_constraints(tmp_path, algorithm):
    out = tmp_path / "run"
    constraints = f"+constraints=[{{kind: params, max: {PARAMS_MAX}}}, {{kind: perplexity, max: {PERPLEXITY_MAX}}}]"
    summary = run_search(
        compose_search([*base_overrides(tmp_path), f"search={algorithm}", "search.n_trials=12", constraints]), out
    )
    study = load(out, f"{algorithm}-seed0")
    evaluated = real(study)
    assert len(evaluated) == 12
    names = [f"params<={PARAMS_MAX}", f"perplexity<={PERPLEXITY_MAX:g}"]
    for t in evaluated:
        recorded = t.user_attrs["constraint_values"]
        assert list(recorded) == names
        # The analytic budget is never spent on: no proposal above it was evaluated.
        assert t.values[1] == recorded[names[0]] <= PARAMS_MAX
        assert recorded[names[1]] == t.values[0]
        assert t.user_attrs["feasible"] == (t.values[0] <= PERPLEXITY_MAX)
        # Optuna's own readers (NSGA-II's ranking, best_trials, the dashboard) see the same violations.
        assert list(t.constraints) == names
        assert (max(t.constraints.values()) <= 0) == t.user_attrs["feasible"]
    infeasible = {t.number for t in evaluated if not t.user_attrs["feasible"]}
    assert summary["infeasible"] == sorted(infeasible)
    front = json.loads((out / "pareto.json").read_text())
    assert front and all(row["feasible"] and row["number"] not in infeasible for row in front)
    assert {t.number for t in study.best_trials} <= {t.number for t in evaluated} - infeasible
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert {r["feasible"] for r in rows if r["evaluated"] == "True"} <= {"True", "False"}
    assert f"constraint:{names[1]}" in rows[0]


def test_an_unreachable_budget_is_refused_before_any_evaluation(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(SearchConfigError, match=r"params<=1000.*smallest sub-network has params=90688"):
        run_search(compose_search([*base_overrides(tmp_path), "+constraints=[{kind: params, max: 1000}]"]), out)
    assert not (out / "trials.csv").exists()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ([{"kind": "params", "max": 1e8, "min": 1e6}], "exactly one bound"),
        ([{"kind": "params"}], "exactly one bound"),
        ([{"kind": "params", "max_ms": 30}], "max_ms bounds a latency"),
        ([{"kind": "size_gb", "dtype": "int3", "max": 0.2}], "dtype 'int3'"),
        ([{"kind": "params", "max": "small"}], "not a number"),
    ],
)
def test_bad_constraints_name_the_fix(spec, message):
    with pytest.raises(SearchConfigError, match=message):
        parse_constraints(spec)


def test_constraint_names_and_violations():
    size, latency, accuracy = parse_constraints(
        [
            {"kind": "size_gb", "dtype": "int8", "max": 0.2},
            {"kind": "latency", "mode": "decode", "max_ms": 30},
            {"kind": "accuracy", "task": "arc_easy", "min": 0.5},
        ]
    )
    assert (size.name, latency.name, accuracy.name) == ("size_gb_int8<=0.2", "latency_decode<=30", "arc_easy>=0.5")
    assert size.analytic and not latency.analytic
    assert size.violation(0.3) == pytest.approx(0.5) and size.met_by(0.2)
    assert accuracy.violation(0.4) == pytest.approx(0.2) and accuracy.met_by(0.6)


def test_linas_ranks_every_feasible_candidate_before_any_infeasible_one():
    objectives = parse_objectives([{"kind": "perplexity"}, {"kind": "params"}])
    sampler = LinasSampler.__new__(LinasSampler)
    sampler.objectives = objectives
    sampler.constraints = parse_constraints([{"kind": "params", "max": 100.0}])
    quantities = np.array([[10.0, 50.0], [1.0, 101.0], [5.0, 200.0], [20.0, 90.0]])
    loss = sampler._infeasible_last(quantities.copy(), quantities)
    feasible, infeasible = loss[[0, 3]], loss[[1, 2]]
    # Every feasible row is better than every infeasible one in every objective, whatever their values.
    assert (feasible[:, None, :] < infeasible[None, :, :]).all()
    # Among infeasible rows, the smaller violation ranks first.
    assert (loss[1] < loss[2]).all()


def test_the_pick_never_chooses_an_infeasible_sub_network(tmp_path):
    from test_deploy import pick_settings

    from nas.stages.pick import deploy

    out = tmp_path / "run"
    cfg = compose_search(
        [
            *base_overrides(tmp_path),
            "search=random",
            "search.n_trials=10",
            f"+constraints=[{{kind: perplexity, max: {PERPLEXITY_MAX}}}]",
        ]
    )
    run_search(cfg, out)
    evaluated = real(load(out, "random-seed0"))
    infeasible = [t for t in evaluated if not t.user_attrs["feasible"]]
    assert infeasible, "the test needs a sub-network that breaks the constraint"
    # Picked by size alone, the smallest sub-networks (the least accurate) would win: only feasible ones compete.
    record = deploy(pick_settings(metric="params", speed=None), out, tmp_path / "deploy", cfg.model)
    feasible = [t for t in evaluated if t.user_attrs["feasible"]]
    best = min(feasible, key=lambda t: (t.values[1], t.values[0]))
    assert record["chosen"]["trial"] == best.number
    assert {c["trial"] for c in record["candidates"]}.isdisjoint(t.number for t in infeasible)


def test_an_unreachable_latency_is_refused_naming_the_fastest_measured(tmp_path):
    out = tmp_path / "run"
    speed = ["speed.batch_size=1", "speed.prompt_len=8", "speed.new_tokens=2", "speed.repeats=1", "speed.warmup=0"]
    overrides = [*base_overrides(tmp_path), *speed, "+constraints=[{kind: latency, mode: decode, max_ms: 0.000001}]"]
    with pytest.raises(SearchConfigError, match=r"latency_decode<=1e-06.*smallest \(fastest\) sub-network has"):
        run_search(compose_search(overrides), out)
    assert not (out / "trials.csv").exists()
