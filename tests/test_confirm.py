"""Held-out confirmation: search and confirmation items are disjoint and recorded, intervals and paired tests
match hand computations, the confirm stage resumes after a kill and notices changed items, and two runs of
a small study with the same seed give the same trials and the same report numbers."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from killpoints import run_killed, was_killed
from test_pipeline import OFFLINE_CPU, SHRINK, compose_pipeline

from nas.errors import NASError
from nas.evaluation.intervals import compare, mcnemar_p, score_interval, wilson
from nas.evaluation.registry import load_task
from nas.evaluation.task import LMEvalTask, Selection
from nas.stages.confirm import check_overlap
from nas.stages.pipeline import run_pipeline

# A small study of the tiny model: reordering, two training steps, 6 LINAS evaluations of mean acc_norm over
# ARC-Easy (search items: its validation split) and PIQA (search items: a seeded share of its only split),
# and the confirm stage on 8 held-out items of each; no quantization or export (tested elsewhere).
STUDY = [
    "experiments=quickstart",
    *SHRINK,
    *OFFLINE_CPU,
    "objectives=[{kind:accuracy,task:[arc_easy,piqa]},{kind:size_gb,dtype:fp16}]",
    "stages.quantize=false",
    "stages.export=false",
]


def study(tmp: Path, *extra: str) -> list[str]:
    return [*STUDY, f"logger.save_dir={tmp}", f"paths.output_dir={tmp / 'run'}", *extra]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("confirm")
    summary = run_pipeline(compose_pipeline(study(tmp)), tmp / "run")
    return tmp, summary


# --- items ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["arc_easy", "piqa"])
def test_search_and_confirmation_items_are_disjoint(name):
    task = load_task(name, source="local")
    (leaf,) = task.tree().leaves
    shared = task.shares_scored_split(leaf)
    scored = len(task.leaf_docs(leaf, task.split_of("scored")))
    pools = {
        items: {
            (task.split_of(items), i)
            for i in task.pool("", len(task.leaf_docs(leaf, task.split_of(items))), items, shared)
        }
        for items in ("search", "confirm")
    }
    search_ids, confirm_ids = pools["search"], pools["confirm"]
    assert search_ids and confirm_ids and not search_ids & confirm_ids
    if shared:  # the one split, shared out: a seeded share searches, the rest confirms
        assert len(search_ids) + len(confirm_ids) == scored
        assert len(search_ids) == round(task.search_fraction * scored)
        assert task.search_share("", scored) == LMEvalTask(name, search_split=None).search_share("", scored)
    else:  # ARC: the validation split searches, the whole test split confirms
        assert len(confirm_ids) == scored and task.split_of("search") == "validation"
    # A limit draws from within the item set, never outside it; the requests are lm-eval's for those documents.
    limited = task.requests(Selection(20, "random", 3, "confirm"))
    assert len(limited) == 20 and {(task.split_of("confirm"), d.index) for d in limited} <= confirm_ids


def test_a_task_cannot_search_on_its_scored_split():
    with pytest.raises(NASError, match="search_split='test' is the scored split"):
        load_task("arc_easy", search_split="test").tree()
    with pytest.raises(NASError, match="items='held_out'"):
        Selection(items="held_out")


def test_the_study_records_which_items_were_used_where(finished):
    tmp, summary = finished
    run = tmp / "run"
    searched = json.loads((run / "search" / "items.json").read_text())
    recorded = json.loads((run / "confirm" / "items.json").read_text())
    assert set(searched) == set(recorded) == {"arc_easy", "piqa"}
    assert searched["arc_easy"]["split"] == "validation" and recorded["arc_easy"]["confirm"]["split"] == "test"
    for task, entry in recorded.items():
        assert entry["search"] == searched[task] and len(entry["search"]["doc_indices"]) == 8
        assert len(entry["confirm"]["doc_indices"]) == 8 and entry["overlap"] == 0
        if entry["search"]["split"] == entry["confirm"]["split"]:
            assert not set(entry["search"]["doc_indices"]) & set(entry["confirm"]["doc_indices"])
    assert summary["stages"]["confirm"]["items"] == {
        t: {"split": e["confirm"]["split"], "count": 8, "overlap_with_search": 0} for t, e in recorded.items()
    }


def test_reusing_search_items_for_confirmation_is_refused_unless_asked():
    searched = {"piqa": {"split": "validation", "doc_indices": [1, 2, 3]}}
    confirming = {"piqa": {"split": "validation", "doc_indices": [3, 4]}}
    with pytest.raises(NASError, match=r"items the search scored \(\{'piqa': 1\}\).*allow_search_items=true"):
        check_overlap(searched, confirming, allowed=False)
    assert check_overlap(searched, confirming, allowed=True) == {"piqa": 1}
    other_split = {"piqa": {"split": "test", "doc_indices": [1, 2, 3]}}
    assert check_overlap(other_split, confirming, allowed=False) == {"piqa": 0}
    with pytest.raises(NASError, match="confirm.items=search would judge the front on the items that chose it"):
        run_pipeline(compose_pipeline([*STUDY, "confirm.items=search"]), Path("/nonexistent/never/created"))


# --- intervals and paired tests ------------------------------------------------------------------


def test_wilson_interval_matches_a_hand_computation():
    # 7 of 10 right: centre (0.7 + z^2/20) / (1 + z^2/10), half-width z sqrt(0.7 * 0.3 / 10 + z^2/400) / (1 + z^2/10).
    z = 1.959963984540054
    denominator = 1 + z * z / 10
    centre = (0.7 + z * z / 20) / denominator
    half = z * math.sqrt(0.021 + z * z / 400) / denominator
    interval = wilson(7, 10)
    assert interval.low == pytest.approx(centre - half) and interval.high == pytest.approx(centre + half)
    assert (round(interval.low, 4), round(interval.high, 4)) == (0.3968, 0.8922)  # the textbook values
    assert wilson(0, 20).low == 0.0 and wilson(20, 20).high == 1.0  # inside [0, 1], unlike the normal interval
    assert score_interval([[1, 1, 1, 1, 1, 1, 1, 0, 0, 0]]) == interval  # one right/wrong task: Wilson


def test_bootstrap_interval_of_a_mean_over_tasks():
    rng = np.random.default_rng(0)
    tasks = [rng.integers(0, 2, 400).astype(float), rng.integers(0, 2, 300).astype(float)]
    interval = score_interval(tasks, resamples=4000, seed=1)
    value = (tasks[0].mean() + tasks[1].mean()) / 2
    # The normal approximation of a mean of two independent proportions, for comparison.
    se = math.sqrt(sum(t.mean() * (1 - t.mean()) / t.size for t in tasks)) / 2
    assert interval.method == "bootstrap" and interval.n == 700 and interval.value == pytest.approx(value)
    assert interval.low == pytest.approx(value - 1.96 * se, abs=0.006)
    assert interval.high == pytest.approx(value + 1.96 * se, abs=0.006)
    assert score_interval(tasks, resamples=4000, seed=1) == interval  # seeded: the same every time


def test_paired_test_gives_one_for_identical_predictions_and_a_small_p_for_a_planted_difference():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2, 200).astype(float)
    same = compare([a], [a.copy()])
    assert (same.p_value, same.difference, same.low, same.high, same.method) == (1.0, 0.0, 0.0, 0.0, "mcnemar")
    # Planted: b is a with 30 right answers turned wrong (and nothing the other way).
    b = a.copy()
    b[np.flatnonzero(a == 1)[:30]] = 0.0
    planted = compare([a], [b])
    assert (planted.a_only, planted.b_only) == (30, 0) and planted.p_value == pytest.approx(2 * 0.5**30)
    assert planted.difference == pytest.approx(0.15) and planted.low > 0
    # Exact McNemar by hand: 8 vs 2 discordant items, p = 2 * (1 + 10 + 45) / 2^10.
    assert mcnemar_p(8, 2) == pytest.approx(2 * 56 / 1024) and mcnemar_p(0, 0) == 1.0
    # Two tasks: the paired bootstrap.
    c = rng.integers(0, 2, 150).astype(float)
    both_same = compare([a, c], [a.copy(), c.copy()])
    assert both_same.method == "paired_bootstrap" and both_same.p_value == 1.0
    both_planted = compare([a, c], [b, c.copy()])
    assert both_planted.p_value < 0.01 and both_planted.low > 0


def test_search_score_intervals_from_what_the_search_recorded():
    from nas.analysis.search_intervals import search_interval
    from nas.search.objectives import parse_objectives

    one, two, costs = parse_objectives(
        [
            {"kind": "accuracy", "task": "arc_easy"},
            {"kind": "accuracy", "task": ["arc_easy", "piqa"]},
            {"kind": "params"},
        ]
    )
    details = {"arc_easy.acc_norm": 0.7, "arc_easy.n": 10, "piqa.acc_norm": 0.6, "piqa.n": 50}
    low, high = search_interval(one, details)
    assert (low, high) == (wilson(7, 10).low, wilson(7, 10).high)
    half = 1.959963984540054 * math.sqrt(0.7 * 0.3 / 10 + 0.6 * 0.4 / 50) / 2
    assert search_interval(two, details) == pytest.approx((0.65 - half, 0.65 + half))
    assert search_interval(one, {"arc_easy.acc_norm": 0.7}) is None  # a study from before items were counted
    assert search_interval(costs, details) is None


# --- the stage ------------------------------------------------------------------------------------


def test_confirmation_scores_both_references_and_the_pareto_set(finished):
    tmp, summary = finished
    run = tmp / "run"
    data = json.loads((run / "confirm" / "confirmation.json").read_text())
    pareto = json.loads((run / "search" / "pareto.json").read_text())
    ids = [c["id"] for c in data["candidates"]]
    assert ids == ["pretrained", "finetuned"] + [f"trial_{r['number']}" for r in pareto]
    name = "mean(arc_easy,piqa)"
    for c in data["candidates"]:
        confirmed = c["confirmed"][name]
        assert confirmed["n"] == 16 and confirmed["method"] == "bootstrap"
        assert confirmed["low"] <= confirmed["value"] <= confirmed["high"]
        tasks = c["tasks"]
        assert confirmed["value"] == pytest.approx(
            (tasks["arc_easy"]["metrics"]["acc_norm"]["value"] + tasks["piqa"]["metrics"]["acc_norm"]["value"]) / 2
        )
        assert c["optimism"][name] == pytest.approx(c["search_values"][name] - confirmed["value"])
        assert set(c["versus"]) == {"pretrained", "finetuned"} - {c["id"]}
    by_id = {c["id"]: c for c in data["candidates"]}
    for row in pareto:  # the search's values of the Pareto set are carried over as its search scores
        assert by_id[f"trial_{row['number']}"]["search_values"][name] == pytest.approx(row[name])
    report = (run / "analyze" / "report.md").read_text()
    assert "## Held-out confirmation" in report and "selections made on confirmed scores" in report
    assert "pre-trained model" in report and "fine-tuned full network" in report
    assert (run / "analyze" / "confirmed.csv").is_file()
    assert any((run / "analyze" / "figures").glob("confirmed_*.png"))


def test_changing_the_confirmation_items_is_a_settings_change_the_pipeline_notices(finished):
    tmp, _ = finished
    with pytest.raises(NASError, match=r"confirm was produced with other settings \(changed: confirm"):
        run_pipeline(compose_pipeline(study(tmp, "confirm.limit=9")), tmp / "run")


CONFIRM_RUN = """
from test_pipeline import compose_pipeline
from nas.stages.pipeline import run_pipeline
run_pipeline(compose_pipeline({overrides!r}), {out!r})
"""


def test_the_confirm_stage_resumes_after_a_kill(finished, tmp_path, monkeypatch):
    reference_tmp, _ = finished
    overrides = study(tmp_path)
    out = str(tmp_path / "run")
    # Killed as the third model's confirmation is recorded: three models' per-item results are on disk.
    proc = run_killed(CONFIRM_RUN.format(overrides=overrides, out=out), at="nas.stages.confirm:ConfirmRun.add", nth=3)
    assert was_killed(proc), proc.stderr[-3000:]
    assert not (tmp_path / "run" / "confirm" / "stage.json").exists()
    with (tmp_path / "run" / "confirm" / "results.jsonl").open() as f:
        assert sum(1 for _ in f) == 3 * 2  # three models x two tasks, with their items
    from nas.evaluation import loglikelihood

    scored = []
    original = loglikelihood.score_batches

    def counting(*args, **kwargs):
        scored.append(args[4] if len(args) > 4 else kwargs.get("desc"))
        return original(*args, **kwargs)

    monkeypatch.setattr("nas.evaluation.evaluator.score_batches", counting)
    summary = run_pipeline(compose_pipeline(overrides), tmp_path / "run")
    assert summary["seconds"]["search"] == 0.0 and summary["seconds"]["confirm"] > 0
    pareto = json.loads((tmp_path / "run" / "search" / "pareto.json").read_text())
    # Only the models not scored before the kill were scored again: (2 references + Pareto set - 3) x 2 tasks.
    assert len(scored) == 2 * (len(pareto) - 1)
    resumed = json.loads((tmp_path / "run" / "confirm" / "confirmation.json").read_text())
    uninterrupted = json.loads((reference_tmp / "run" / "confirm" / "confirmation.json").read_text())
    assert resumed["candidates"] == uninterrupted["candidates"]


def test_same_seed_same_cpu_gives_the_same_study_and_the_same_report(finished, tmp_path):
    reference_tmp, _ = finished
    run_pipeline(compose_pipeline(study(tmp_path)), tmp_path / "run")
    runs = [reference_tmp / "run", tmp_path / "run"]

    def trials(run: Path) -> list[dict[str, str]]:
        with (run / "search" / "trials.csv").open() as f:
            return [
                {k: v for k, v in row.items() if k not in ("seconds", "started", "completed", "worker")}
                for row in csv.DictReader(f)
            ]

    assert trials(runs[0]) == trials(runs[1]) and len(trials(runs[0])) >= 6
    analyses = [json.loads((run / "analyze" / "analysis.json").read_text()) for run in runs]
    for key in ("pareto_set", "selected", "confirmation"):
        assert _without_paths(analyses[0][key]) == _without_paths(analyses[1][key]), key


def _without_paths(value):
    """A report's numbers without the file paths that differ between two run directories."""
    if isinstance(value, dict):
        return {k: _without_paths(v) for k, v in value.items() if k != "figure"}
    if isinstance(value, list):
        return [_without_paths(v) for v in value]
    return value
