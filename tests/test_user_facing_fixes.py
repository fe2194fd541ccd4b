"""User-visible fixes of the architecture pass: files round-trip, sweeps land where the README says, unknown
search settings are refused, exports' tokenizers load without a prompt, labels and progress say the truth."""

from __future__ import annotations

import builtins
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from test_eval_entry import compose_evaluate
from test_eval_evaluator import write_synthetic_data
from test_search_job import base_overrides, compose_search

from nas.errors import SearchConfigError
from nas.stages.evaluate import run_evaluation
from nas.stages.export import run_export
from nas.stages.search import run_search
from nas.supernet.subnetwork import SubNetwork

ROOT = Path(__file__).resolve().parents[1]
CONF = str(ROOT / "conf")


def compose_export(*overrides: str):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("export", overrides=["model=tiny_llama", "search_space=llama_nas", *overrides])


def test_export_evaluate_export_round_trip(tmp_path):
    first = run_export(compose_export("subnet=random:4", f"out_dir={tmp_path / 'first'}"), tmp_path / "r1")
    sub = SubNetwork.load(first)
    data = write_synthetic_data(tmp_path / "data")
    # An export folder and its subnetwork.json are both sub-network files for every subnet= argument.
    for spec in (first, first / "subnetwork.json"):
        cfg = compose_evaluate([f"paths.data_dir={data}", f"subnet={spec}", "task=arc_easy", "limit=2", "speed=null"])
        result = run_evaluation(cfg, tmp_path / "eval")
        assert SubNetwork.from_dict(result["subnetwork"]) == sub
    second = run_export(
        compose_export(f"subnet={first / 'subnetwork.json'}", f"out_dir={tmp_path / 'second'}"), tmp_path / "r2"
    )
    assert SubNetwork.load(second) == sub
    assert (first / "model.safetensors").read_bytes() == (second / "model.safetensors").read_bytes()


def test_a_search_sweep_goes_under_name_time_job(tmp_path):
    overrides = [o for o in base_overrides(tmp_path) if not o.startswith("paths.output_dir")]
    command = [sys.executable, "-m", "nas.search", "-m", *overrides, "search=random", "search.n_trials=2"]
    proc = subprocess.run([*command, "search.seed=0,1"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweeps = list((tmp_path / "multirun_outputs" / "search").iterdir())
    assert len(sweeps) == 1 and sweeps[0].name[:4].isdigit()  # <time>
    jobs = sorted(p.name for p in sweeps[0].iterdir() if p.is_dir())
    # One folder per job, although an override holds a path (perplexity.text_file=/...): no nesting.
    assert [j.split("_")[0] for j in jobs] == ["0", "1"] and all(len(j) <= 122 for j in jobs)
    assert all((sweeps[0] / j / "study.db").is_file() and (sweeps[0] / j / "summary.json").is_file() for j in jobs)
    assert "completed" in (sweeps[0] / "sweep_summary.md").read_text()


def test_an_unknown_search_setting_is_refused(tmp_path, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the settings were checked")

    monkeypatch.setattr("nas.search.context.instantiate", no_model)
    cfg = compose_search([*base_overrides(tmp_path), "+search.max_size_gb=0.2", "+search.linas.rounds=3"])
    with pytest.raises(SearchConfigError, match=r"search\.max_size_gb: the search does not read them.*n_trials"):
        run_search(cfg, tmp_path / "run")


def test_an_exported_tokenizer_loads_without_a_prompt(tiny, tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    from nas import export_sub_network

    model, tokenizer = tiny
    asked: list[str] = []
    monkeypatch.setattr(builtins, "input", lambda prompt="": asked.append(prompt) or "n")
    folder = export_sub_network(model, SubNetwork((0, 2), (64, 128), (4, 2), 64), tmp_path / "e", tokenizer)
    assert "auto_map" in json.loads((folder / "config.json").read_text())  # a per-layer export (remote code)
    loaded = AutoTokenizer.from_pretrained(folder)
    assert asked == [] and loaded("sub-networks")["input_ids"] == tokenizer("sub-networks")["input_ids"]


def test_a_quantized_size_is_logged_as_a_footprint():
    from nas.search.objectives import parse_objectives
    from nas.stages.quantize import _described

    objectives = parse_objectives([{"kind": "perplexity"}, {"kind": "size_gb", "dtype": "fp16"}])
    assert (
        _described({"perplexity": 12.5, "size_gb_fp16": 0.1635}, objectives) == "perplexity=12.5, footprint_gb=0.1635"
    )


def test_the_speed_timing_shows_its_progress(tiny, capsys):
    from nas.evaluation.speed import ThroughputMeter

    model, _ = tiny
    ThroughputMeter(batch_size=1, prompt_len=4, new_tokens=2, warmup=0, repeats=2, progress=True).measure(model)
    err = capsys.readouterr().err
    assert "speed: prefill" in err and "speed: decode" in err


def test_one_wandb_switch_for_training_search_and_report():
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("pipeline", overrides=["logger=wandb", "wandb.mode=disabled"])
    assert cfg.logger.mode == "disabled" and cfg.wandb.mode == "disabled"


def test_our_modules_change_no_global_state_at_import():
    """Warning filters and Optuna's log level are set where they are needed, at run time (the libraries we
    import first may set their own filters; ours add none)."""
    code = (
        "import logging, warnings\n"
        "import torch, transformers, lightning, optuna, sklearn, scipy, matplotlib, lm_eval, peft, datasets, wandb\n"
        "before = (list(warnings.filters), logging.getLogger('optuna').level, logging.root.level)\n"
        "import nas.stages.pipeline, nas.stages.evaluate, nas.stages.overview, nas.analysis.report\n"
        "after = (list(warnings.filters), logging.getLogger('optuna').level, logging.root.level)\n"
        "assert after == before, [f for f in after[0] if f not in before[0]] or after[1:]\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
