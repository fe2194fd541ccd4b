"""`python -m nas.pipeline` end to end on the tiny model: every stage, re-runs that do no work again,
changed settings refused, bad input before any stage, and the shipped experiments compose."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from test_search_job import TEXT

from nas.errors import NASError, SearchConfigError
from nas.pipeline import run_pipeline

CONF = str(Path(__file__).resolve().parents[1] / "conf")
EXPERIMENTS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "experiments").glob("*.yaml"))


def compose_pipeline(overrides: list[str]):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="pipeline", overrides=overrides)


def tiny_pipeline(tmp: Path, *extra: str) -> list[str]:
    text = tmp / "text.txt"
    text.write_text(TEXT)
    return [
        "model=tiny_llama",
        "search_space=llama_nas",
        # importance reordering on a few windows of the local C4 sample
        "stages.reorder=true",
        "calibration.num_samples=4",
        "calibration.seq_len=64",
        # training: two alternating steps on the local Alpaca set
        "data.limit=40",
        "data.batch_size=2",
        "data.max_length=192",
        "data.source=local",
        "trainer.max_steps=2",
        "trainer.accelerator=cpu",
        "trainer.val_check_interval=2",
        "trainer.limit_val_batches=1",
        f"logger.save_dir={tmp}",
        # search: perplexity vs params, 6 random sub-networks
        "search=random",
        "search.n_trials=6",
        "search.population_size=3",
        "search.progress=false",
        "objective=perplexity_vs_params",
        f"perplexity.text_file={text}",
        "perplexity.max_tokens=512",
        "perplexity.seq_len=128",
        "wandb.mode=disabled",
        f"paths.output_dir={tmp / 'run'}",
        *extra,
    ]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pipeline")
    overrides = tiny_pipeline(tmp)
    summary = run_pipeline(compose_pipeline(overrides), tmp / "run")
    return tmp, overrides, summary


def test_every_stage_runs_and_leaves_its_outputs(finished):
    tmp, _, summary = finished
    run = tmp / "run"
    assert list(summary["stages"]) == ["reorder", "train", "search", "quantize", "analyze", "export"]
    reordered = json.loads((run / "reorder" / "reordered" / "config.json").read_text())
    trained = json.loads((run / "train" / "supernet" / "config.json").read_text())
    assert trained["nas_layer_order"] == reordered["nas_layer_order"]  # training started from the reordered model
    search = json.loads((run / "search" / "summary.json").read_text())
    assert search["evaluations"] == 6
    assert (run / "quantize" / "quantized.json").is_file()
    assert (run / "analyze" / "report.html").is_file() and (run / "analyze" / "report.md").is_file()
    exported = [p for p in (run / "export").iterdir() if p.is_dir()]
    assert exported and all((p / "config.json").is_file() for p in exported)
    for stage in summary["stages"]:
        assert json.loads((run / stage / "stage.json").read_text())["fingerprint"]


def test_rerunning_a_finished_pipeline_does_no_work(finished, monkeypatch):
    tmp, overrides, summary = finished

    def no_work(*args, **kwargs):
        raise AssertionError("a finished stage ran again")

    monkeypatch.setattr("nas.train.run_training", no_work)
    monkeypatch.setattr("nas.search.runner.run_search", no_work)
    again = run_pipeline(compose_pipeline(overrides), tmp / "run")
    assert again["stages"] == json.loads(json.dumps(summary["stages"]))
    assert set(again["seconds"].values()) == {0.0}


def test_changed_settings_of_a_finished_stage_are_refused(finished):
    tmp, overrides, _ = finished
    with pytest.raises(NASError, match=r"other settings \(changed: .*trainer"):
        run_pipeline(compose_pipeline([*overrides, "trainer.max_steps=3"]), tmp / "run")


def test_bad_input_fails_before_any_stage(tmp_path):
    overrides = tiny_pipeline(tmp_path, "search.n_trials=2", "search=nsga2")
    with pytest.raises(SearchConfigError, match="below search.population_size"):
        run_pipeline(compose_pipeline(overrides), tmp_path / "run")
    with pytest.raises(NASError, match="Unknown stages"):
        run_pipeline(compose_pipeline([*tiny_pipeline(tmp_path), "+stages.deploy=true"]), tmp_path / "run")
    assert not (tmp_path / "run" / "train").exists()


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiments_compose(experiment):
    if experiment == "llama_nas_finetune":  # a training experiment (python -m nas.train)
        return
    cfg = compose_pipeline([f"experiments={experiment}"])
    assert cfg.name == experiment or experiment.endswith("_base")
    assert len(cfg.objectives) >= 2 and cfg.search.n_trials >= cfg.search.population_size


def test_paper_settings_are_in_the_experiments():
    arc_c = compose_pipeline(["experiments=llama_nas_arc_c"])
    assert arc_c.model.name_or_path == "meta-llama/Llama-2-7b-hf" and arc_c.search.algorithm == "linas"
    assert (arc_c.search.population_size, arc_c.search.n_trials) == (50, 250)
    assert (
        arc_c.search.crossover_prob,
        arc_c.search.crossover_eta,
        arc_c.search.mutation_prob,
        arc_c.search.mutation_eta,
    ) == (0.9, 15, 0.02, 20)
    assert arc_c.objectives[0].task == "arc_challenge" and arc_c.quantization.method == "int8"
    assert arc_c.strategy._target_.endswith("AlternatingStrategy")
    klein = compose_pipeline(["experiments=klein_smollm2"])
    assert klein.search_space.name == "klein" and klein.sampler._target_.endswith("CalibrateMagSampler")
    assert klein.strategy._target_.endswith("SandwichStrategy")
    quick = compose_pipeline(["experiments=quickstart"])
    assert quick.search.n_trials >= 20 and quick.model._target_.endswith("gguf_package_model")


def test_multirun_jobs_are_compared_in_a_sweep_summary(tmp_path):
    from nas.analysis.sweep import write_sweep_summary

    for job, hv in (("0_sampler=uniform", 0.41), ("1_sampler=grid_params", 0.47)):
        (tmp_path / job / "search").mkdir(parents=True)
        summary = {"evaluations": 100, "pareto_size": 7, "hypervolume": hv, "reference": {"arc_easy": 0.5}}
        (tmp_path / job / "search" / "summary.json").write_text(json.dumps(summary))
    rows = write_sweep_summary(tmp_path)
    assert [(r["job"], r["hypervolume"]) for r in rows] == [
        ("0_sampler=uniform", 0.41),
        ("1_sampler=grid_params", 0.47),
    ]
    text = (tmp_path / "sweep_summary.md").read_text()
    assert "1_sampler=grid_params" in text and "0.4700" in text
    assert (tmp_path / "sweep_summary.csv").is_file()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="pipeline", overrides=["experiments=ablation_sampler"], return_hydra_config=True)
    assert cfg.hydra.callbacks.sweep_summary._target_ == "nas.analysis.sweep.SweepSummary"
    assert cfg.hydra.mode.name == "MULTIRUN"
    assert len(str(cfg.hydra.sweeper.params.sampler).split(",")) == 5
