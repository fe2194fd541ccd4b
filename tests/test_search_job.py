"""`python -m nas.search` on the tiny model: budgets met exactly, no sub-network evaluated twice,
outputs, resumption after SIGKILL, several workers, LINAS rounds, and bad input refused up front."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
from hydra import compose, initialize_config_dir
from optuna.trial import TrialState
from test_eval_evaluator import write_synthetic_data

from nas.errors import NASError, SearchConfigError
from nas.search.study import REFERENCE_ATTR
from nas.stages.search import run_search

CONF = str(Path(__file__).resolve().parents[1] / "conf")
ROOT = Path(__file__).resolve().parents[1]
TEXT = "\n".join(
    f"Line {i}: the elastic super-network shares its weights with sub-network {i % 7}." for i in range(300)
)


def base_overrides(tmp: Path) -> list[str]:
    text = tmp / "text.txt"
    text.write_text(TEXT)
    return [
        "model=tiny_llama",
        "objective=perplexity_vs_params",
        f"perplexity.text_file={text}",
        "perplexity.max_tokens=1024",
        "perplexity.seq_len=128",
        "search.population_size=4",
        "search.n_trials=10",
        "search.progress=false",
        "search.heartbeat_interval=1",
        "search.grace_period=5",
        "search.duplicate_patience=10",
        "wandb.mode=disabled",
        f"paths.output_dir={tmp / 'run'}",
    ]


def compose_search(overrides: list[str]):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="search", overrides=overrides)


def load(out: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{out / 'study.db'}")


def real(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials(states=(TrialState.COMPLETE,)) if t.user_attrs.get("evaluated")]


def check_no_repeats(study: optuna.Study) -> None:
    keys = [t.user_attrs["subnet_key"] for t in real(study)]
    assert len(keys) == len(set(keys)), "a sub-network was evaluated twice"


@pytest.mark.parametrize("algorithm", ["nsga2", "random"])
def test_search_meets_the_budget_exactly_and_writes_its_outputs(tmp_path, algorithm):
    out = tmp_path / "run"
    summary = run_search(compose_search([*base_overrides(tmp_path), f"search={algorithm}"]), out)
    study = load(out, f"{algorithm}-seed0")
    assert len(real(study)) == 10 == summary["evaluations"]
    check_no_repeats(study)
    reference = study.user_attrs[REFERENCE_ATTR]["values"]
    assert set(reference) == {"perplexity", "params"} and reference["params"] >= max(t.values[1] for t in real(study))
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert len(rows) == len(study.trials)
    pareto = json.loads((out / "pareto.json").read_text())
    assert pareto and all("subnetwork" in p for p in pareto)
    hv = [float(r["hypervolume"]) for r in csv.DictReader((out / "hypervolume.csv").open())]
    assert len(hv) == 10 and hv == sorted(hv) and hv[-1] == pytest.approx(summary["hypervolume"]) and hv[-1] > 0
    assert json.loads((out / "reference.json").read_text())["values"] == reference
    # Re-running the finished study evaluates nothing and changes nothing.
    again = run_search(compose_search([*base_overrides(tmp_path), f"search={algorithm}"]), out)
    assert again["evaluated_this_run"] == 0 and len(load(out, f"{algorithm}-seed0").trials) == len(study.trials)


def test_accuracy_objective_scores_a_task(tmp_path):
    data = write_synthetic_data(tmp_path / "data")
    overrides = [*base_overrides(tmp_path), "objective=accuracy_vs_size", f"paths.data_dir={data}", "evaluator.limit=4"]
    overrides += ["search=random", "search.n_trials=5"]
    out = tmp_path / "run"
    run_search(compose_search(overrides), out)
    study = load(out, "random-seed0")
    assert [o.name for o in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    for t in real(study):
        assert 0.0 <= t.values[0] <= 1.0 and "arc_easy.acc" in t.user_attrs["details"]
    # Scored on the search items (ARC's validation split), and the study says which.
    recorded = json.loads((out / "items.json").read_text())
    assert recorded == study.user_attrs["items"]
    assert recorded["arc_easy"]["split"] == "validation" and recorded["arc_easy"]["items"] == "search"
    assert len(recorded["arc_easy"]["doc_indices"]) == 4


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from test_search_job import compose_search
    from nas.stages import search as runner
    from nas.search.objective_scorer import ObjectiveScorer

    original, calls = ObjectiveScorer.__call__, []

    def dies_in_fifth_evaluation(self, sub):
        if sub is not None:
            calls.append(sub)
            if len(calls) == 5:  # mid-way: four trials done, the fifth in flight
                os.kill(os.getpid(), signal.SIGKILL)
        return original(self, sub)

    ObjectiveScorer.__call__ = dies_in_fifth_evaluation
    runner.run_search(compose_search({overrides!r}), {out!r})
    """
)


def test_killed_search_resumes_without_losing_or_repeating_work(tmp_path):
    overrides = [*base_overrides(tmp_path), "search.n_trials=9"]
    out = tmp_path / "run"
    script = KILLER.format(tests=str(ROOT / "tests"), overrides=overrides, out=str(out))
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-3000:]
    study = load(out, "nsga2-seed0")
    before = {t.number: (t.values, t.user_attrs["subnet_key"]) for t in real(study)}
    in_flight = [t.number for t in study.get_trials(states=(TrialState.RUNNING,))]
    assert len(before) == 4 and len(in_flight) == 1

    summary = run_search(compose_search(overrides), out)

    study = load(out, "nsga2-seed0")
    after = {t.number: (t.values, t.user_attrs["subnet_key"]) for t in real(study)}
    assert all(after[n] == v for n, v in before.items()), "a completed trial did not survive"
    assert len(after) == 9 == summary["evaluations"] and summary["evaluated_this_run"] == 5
    assert study.trials[in_flight[0]].state == TrialState.FAIL
    check_no_repeats(study)


def test_two_workers_share_one_study(tmp_path):
    out = tmp_path / "run"
    summary = run_search(compose_search([*base_overrides(tmp_path), "search=random", "search.n_workers=2"]), out)
    study = load(out, "random-seed0")
    assert len(real(study)) == 10 == summary["evaluations"]
    workers = {t.user_attrs["worker"] for t in real(study)}
    assert len(workers) == 2, workers
    check_no_repeats(study)


def test_linas_rounds_log_predictor_quality(tmp_path):
    overrides = [*base_overrides(tmp_path), "search=linas", "search.n_trials=12", "search.linas.round_size=4"]
    overrides += ["search.linas.inner_population=16", "search.linas.generations=4"]
    out = tmp_path / "run"
    summary = run_search(compose_search(overrides), out)
    study = load(out, "linas-seed0")
    assert len(real(study)) == 12
    check_no_repeats(study)
    rounds = summary["linas_rounds"]
    assert [r["round"] for r in rounds] == [1, 2]
    assert rounds[0]["n_train"] == 4 and rounds[1]["n_train"] == 8
    assert "cv" in rounds[0]["objectives"]["perplexity"] and "params" not in rounds[0]["objectives"]
    assert "prospective" in rounds[1]["objectives"]["perplexity"]
    from_rounds = [t for t in real(study) if t.user_attrs.get("linas_round")]
    assert len(from_rounds) == 8 and all("perplexity" in t.user_attrs["linas_predicted"] for t in from_rounds)


@pytest.mark.parametrize(
    ("extra", "error", "message"),
    [
        (["search.n_trials=3"], SearchConfigError, "below search.population_size"),
        (["objectives=[{kind: accuracy, task: arc_hard}, {kind: params}]"], NASError, "arc_easy"),
        (
            ["objectives=[{kind: params, direction: maximize}, {kind: flops}]"],
            SearchConfigError,
            "params is to minimize",
        ),
        (["search.storage=sqlite:////proc/no/such/dir/study.db"], SearchConfigError, "Cannot open the study storage"),
        (["search.algorithm=cma"], SearchConfigError, "available"),
    ],
)
def test_bad_input_fails_before_any_evaluation(tmp_path, extra, error, message):
    out = tmp_path / "run"
    with pytest.raises(error, match=message):
        run_search(compose_search([*base_overrides(tmp_path), *extra]), out)
    assert not (out / "study.db").exists() or not load(out, "nsga2-seed0").trials


def test_existing_study_with_other_objectives_is_refused_and_left_intact(tmp_path):
    out = tmp_path / "run"
    run_search(compose_search([*base_overrides(tmp_path), "search.n_trials=4"]), out)
    trials = len(load(out, "nsga2-seed0").trials)
    other = [*base_overrides(tmp_path), "search.n_trials=4", "objectives=[{kind: perplexity}, {kind: flops}]"]
    with pytest.raises(SearchConfigError, match="exists with a different objectives"):
        run_search(compose_search(other), out)
    with pytest.raises(SearchConfigError, match="exists with a different search_space"):
        run_search(compose_search([*base_overrides(tmp_path), "search.n_trials=4", "search_space=layers_only"]), out)
    assert len(load(out, "nsga2-seed0").trials) == trials


def test_wandb_offline_run_is_written_and_closed(tmp_path):
    import wandb

    out = tmp_path / "run"
    run_search(
        compose_search(
            [
                *base_overrides(tmp_path),
                "search=random",
                "search.n_trials=3",
                "wandb.mode=offline",
                f"wandb.dir={tmp_path}",
            ]
        ),
        out,
    )
    try:
        assert wandb.run is None  # finished
        runs = list((tmp_path / "wandb").glob("offline-run-*"))
        assert len(runs) == 1 and any(runs[0].rglob("*.wandb"))
    finally:
        wandb.teardown()  # later tests (Lightning's WandbLogger) start from a fresh wandb process state


def test_report_tables_with_mixed_column_types_reach_wandb(tmp_path):
    """A selection table whose `trial` column holds "reference" and trial numbers is logged, not refused."""
    import wandb

    from nas.search.tracking import log_report

    cfg = compose_search([*base_overrides(tmp_path), "wandb.mode=offline", f"wandb.dir={tmp_path}"])
    rows = [
        {"selection": "reference", "trial": "reference", "arc_easy": 50.0, "int8_gb": None},
        {"selection": "same accuracy, smallest", "trial": 23, "arc_easy": 52.0, "int8_gb": 0.18},
    ]
    try:
        log_report(cfg, "mixed", [], {"selected": rows})
        assert wandb.run is None  # finished
        assert any((tmp_path / "wandb").glob("offline-run-*/**/*.wandb"))
    finally:
        wandb.teardown()
