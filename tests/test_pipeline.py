"""`python -m nas.pipeline` end to end on the tiny model: every stage, re-runs that do no work again,
changed settings refused, bad input before any stage, and the shipped experiments compose."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from test_search_job import TEXT

from nas.errors import NASError, SearchConfigError
from nas.stages.pipeline import run_pipeline

CONF = str(Path(__file__).resolve().parents[1] / "conf")
EXPERIMENTS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "experiments").glob("*.yaml"))


def compose_pipeline(overrides: list[str]):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="pipeline", overrides=overrides)


def compose_train(overrides: list[str]):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


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
    # The export stage also picks the best sub-network within a budget and deploys it with its card.
    overrides = tiny_pipeline(tmp, "export.budget={params: 150000}", "export.metric=perplexity")
    summary = run_pipeline(compose_pipeline(overrides), tmp / "run")
    return tmp, overrides, summary


def test_every_stage_runs_and_leaves_its_outputs(finished):
    tmp, _, summary = finished
    run = tmp / "run"
    assert list(summary["stages"]) == ["reorder", "train", "search", "confirm", "quantize", "analyze", "export"]
    assert summary["stages"]["confirm"] == {"confirmed": 0, "why": "no accuracy objective"}  # perplexity vs params
    reordered = json.loads((run / "reorder" / "reordered" / "config.json").read_text())
    trained = json.loads((run / "train" / "supernet" / "config.json").read_text())
    assert trained["nas_layer_order"] == reordered["nas_layer_order"]  # training started from the reordered model
    search = json.loads((run / "search" / "summary.json").read_text())
    assert search["evaluations"] == 6
    quantized = json.loads((run / "quantize" / "quantized.json").read_text())
    timed = json.loads((run / "quantize" / "speed.json").read_text())  # throughput is not an objective here
    assert [e["trial"] for e in timed] == [e["trial"] for e in quantized]  # the reference and the Pareto set
    assert all(e["decode_tokens_per_s"] > 0 for e in timed)
    assert all(e["details"]["decode_tokens_per_s"] > 0 for e in quantized)  # the INT8 versions, timed too
    assert "decode tok/s" in (run / "analyze" / "report.md").read_text()
    assert any((run / "analyze" / "figures").glob("pareto_*_vs_throughput_decode.png"))
    assert (run / "analyze" / "report.html").is_file() and (run / "analyze" / "report.md").is_file()
    exported = [p for p in (run / "export").iterdir() if p.is_dir()]
    assert exported and all((p / "config.json").is_file() for p in exported)
    deployed = json.loads((run / "export" / "deploy" / "pick.json").read_text())
    pareto = {row["number"]: row for row in json.loads((run / "search" / "pareto.json").read_text())}
    best = min((r for r in pareto.values() if r["params"] <= 150000), key=lambda r: r["perplexity"])
    assert deployed["chosen"]["trial"] == best["number"]  # the best within budget is on the front
    card = (run / "export" / "deploy" / "README.md").read_text()
    assert "int8" in card and f"Parameters: {int(best['params']):,}." in card
    for stage in summary["stages"]:
        assert json.loads((run / stage / "stage.json").read_text())["fingerprint"]


def test_rerunning_a_finished_pipeline_does_no_work(finished, monkeypatch):
    tmp, overrides, summary = finished

    def no_work(*args, **kwargs):
        raise AssertionError("a finished stage ran again")

    monkeypatch.setattr("nas.stages.train.run_training", no_work)
    monkeypatch.setattr("nas.stages.search.run_search", no_work)
    again = run_pipeline(compose_pipeline(overrides), tmp / "run")
    assert again["stages"] == json.loads(json.dumps(summary["stages"]))
    assert set(again["seconds"].values()) == {0.0}


def test_a_failed_stage_keeps_earlier_outputs_and_the_rerun_continues_there(tmp_path, monkeypatch):
    overrides = tiny_pipeline(tmp_path, "stages.reorder=false", "stages.train=false", "stages.export=false")

    def crash(*args, **kwargs):
        raise RuntimeError("out of memory while quantizing")

    monkeypatch.setattr("nas.stages.quantize.quantize_pareto_set", crash)
    with pytest.raises(RuntimeError, match="out of memory"):
        run_pipeline(compose_pipeline(overrides), tmp_path / "run")
    search = tmp_path / "run" / "search"
    assert json.loads((search / "stage.json").read_text())["fingerprint"]  # the search finished and stays
    assert not (tmp_path / "run" / "quantize" / "stage.json").exists()
    monkeypatch.undo()

    def no_work(*args, **kwargs):
        raise AssertionError("the finished search ran again")

    monkeypatch.setattr("nas.stages.search.run_search", no_work)
    summary = run_pipeline(compose_pipeline(overrides), tmp_path / "run")
    assert summary["seconds"]["search"] == 0.0 and summary["seconds"]["quantize"] > 0
    assert (tmp_path / "run" / "analyze" / "report.md").is_file()


@pytest.mark.parametrize(("change", "key"), [("trainer.max_steps=3", "trainer"), ("reorder=true", "reorder")])
def test_changed_settings_of_a_finished_stage_are_refused(finished, change, key):
    tmp, overrides, _ = finished
    with pytest.raises(NASError, match=rf"other settings \(changed: .*{key}"):
        run_pipeline(compose_pipeline([*overrides, change]), tmp / "run")


def test_bad_input_fails_before_any_stage(tmp_path):
    overrides = tiny_pipeline(tmp_path, "search.n_trials=2", "search=nsga2")
    with pytest.raises(SearchConfigError, match="below search.population_size"):
        run_pipeline(compose_pipeline(overrides), tmp_path / "run")
    with pytest.raises(NASError, match="Unknown stages"):
        run_pipeline(compose_pipeline([*tiny_pipeline(tmp_path), "+stages.deploy=true"]), tmp_path / "run")
    assert not (tmp_path / "run" / "train").exists()


# Shared bases are included by the experiments, llama_nas_finetune is a training run (tests/test_train_cli.py runs
# it), and ablation_sampler is a multirun (test_ablation_sweep_compares_jobs_and_reports_a_failed_one runs it).
RUNNABLE = [e for e in EXPERIMENTS if not e.endswith("_base") and e not in ("llama_nas_finetune", "ablation_sampler")]
# The shrinking overrides, then what any experiment needs on this offline CPU machine: the one-device
# trainer instead of FSDP / bf16 GPU ones, local data instead of the hub, and no W&B.
SHRINK = [
    "model=tiny_llama",
    "search.n_trials=6",
    "search.population_size=3",
    "trainer.max_steps=2",
    "limit=8",
    "confirm.limit=8",
]
# The paper experiments run the baselines stage: one ratio per method (0.5 is also the 2:4 methods' only one)
# and a few calibration windows keep it to seconds on the tiny model while still pruning, scoring and drawing them.
BASELINES_SHRINK = ["ratio=[0.5]", "calibration.num_samples=8"]
OFFLINE_CPU = ["trainer=default", "trainer.max_steps=2", "data.source=auto", "logger=csv", "wandb.mode=disabled"]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiments_compose(experiment):
    if experiment == "llama_nas_finetune":  # LLaMA-NAS 3.1
        cfg = compose_train(["experiments=llama_nas_finetune"])
        assert cfg.name == experiment and cfg.strategy._target_.endswith("AlternatingStrategy")
        assert cfg.model.name_or_path == "meta-llama/Llama-2-7b-hf" and cfg.data.source == "hub"
        assert (cfg.epochs, cfg.optim.lr, cfg.optim.global_batch_size) == (6, 1e-5, 128)
        assert cfg.finetune._target_.endswith("full_finetuning")
        return
    cfg = compose_pipeline([f"experiments={experiment}"])
    assert cfg.name == experiment or experiment.endswith("_base")
    assert len(cfg.objectives) >= 2 and cfg.search.n_trials >= cfg.search.population_size


@pytest.mark.slow
@pytest.mark.parametrize("experiment", RUNNABLE)
def test_experiment_runs_to_completion_on_the_tiny_model(experiment, tmp_path):
    overrides = [f"experiments={experiment}", *SHRINK, *BASELINES_SHRINK, *OFFLINE_CPU, f"logger.save_dir={tmp_path}"]
    if experiment == "llama_nas_mmlu":  # 57 subjects of 5-shot prompts, ~3k tokens each with the byte tokenizer
        overrides += ["limit=1", "confirm.limit=1"]
    cfg = compose_pipeline([*overrides, f"paths.output_dir={tmp_path / 'run'}"])
    summary = run_pipeline(cfg, tmp_path / "run")
    assert [s for s, on in cfg.stages.items() if on] == list(summary["stages"])
    search = json.loads((tmp_path / "run" / "search" / "summary.json").read_text())
    assert search["evaluations"] == 6
    assert {o["name"] for o in search["objectives"]} == set(search["reference"])
    assert cfg.evaluator.limit == (1 if experiment == "llama_nas_mmlu" else 8)
    assert (tmp_path / "run" / "analyze" / "report.html").is_file()
    confirmed = json.loads((tmp_path / "run" / "confirm" / "confirmation.json").read_text())["candidates"]
    assert [c["kind"] for c in confirmed[:2]] == ["reference", "reference"]  # pre-trained and fine-tuned
    if cfg.stages.baselines:  # the paper experiments: each selected method pruned once (ratio 0.5) and scored
        baselines = json.loads((tmp_path / "run" / "baselines" / "baselines.json").read_text())["baselines"]
        assert sorted(e["method"] for e in baselines) == sorted(cfg.baseline)
        # ... and confirmed on held-out items, loaded from its saved folder like any user would
        assert sorted(c["method"] for c in confirmed if c["kind"] == "baseline") == sorted(cfg.baseline)


@pytest.mark.parametrize("entry", ["pipeline", "search", "train", "evaluate"])
def test_unknown_experiment_lists_the_available_ones(entry):
    from hydra.errors import MissingConfigException

    with (
        initialize_config_dir(config_dir=CONF, version_base="1.3"),
        pytest.raises(MissingConfigException, match="Could not find 'experiments/no_such'") as error,
    ):
        compose(config_name=entry, overrides=["experiments=no_such"])
    assert all(name in str(error.value) for name in ("quickstart", "ablation_sampler", "llama_nas_arc_c"))


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


@pytest.mark.slow
def test_ablation_sweep_compares_jobs_and_reports_a_failed_one(tmp_path):
    """The issue's multirun, shrunk: two samplers x two budgets, where the budget of 2 fails (below the
    population): every job still runs, the failures are listed with their error, the others compared."""
    sweep = tmp_path / "sweep"
    shrink = [o for o in SHRINK if not o.startswith("search.n_trials")]
    command = [sys.executable, "-m", "nas.pipeline", "-m", "experiments=ablation_sampler", *shrink, *OFFLINE_CPU]
    command += ["sampler=uniform,importance_random", "search.n_trials=6,2", f"hydra.sweep.dir={sweep}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert done.returncode != 0 and "below search.population_size" in done.stderr  # Hydra re-raises at the end
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert [j.split("_", 1)[0] for j in jobs] == ["0", "1", "2", "3"]
    assert all("sampler=" in j and "search.n_trials=" in j for j in jobs)
    with (sweep / "sweep_summary.csv").open() as f:
        rows = {row["job"]: row for row in csv.DictReader(f)}
    assert set(rows) == set(jobs)
    for job, row in rows.items():
        # The job's own overrides (its folder name is cut short, with a hash, once the overrides get long).
        overrides = yaml.safe_load((sweep / job / ".hydra" / "overrides.yaml").read_text())
        if "search.n_trials=2" in overrides:
            assert row["status"] == "failed" and "below search.population_size" in row["error"]
        else:
            assert row["status"] == "completed" and row["evaluations"] == "6" and float(row["hypervolume"]) >= 0
            assert json.loads((sweep / job / "search" / "summary.json").read_text())["evaluations"] == 6
    text = (sweep / "sweep_summary.md").read_text()
    assert "## Failed jobs" in text and "sweep_summary.png" in text
    assert (sweep / "sweep_summary.png").stat().st_size > 10_000


def test_sweep_summary_of_finished_and_failed_jobs(tmp_path):
    from nas.analysis.sweep import STATUS_FILE, write_sweep_summary

    objectives = [
        {"kind": "accuracy", "direction": "maximize", "tasks": ["arc_easy"], "name": "arc_easy"},
        {"kind": "params", "direction": "minimize", "name": "params"},
    ]
    for job, hv in (("0_sampler=uniform", 0.41), ("1_sampler=grid_params", 0.47)):
        search = tmp_path / job / "search"
        search.mkdir(parents=True)
        summary = {"evaluations": 3, "pareto_size": 2, "hypervolume": hv, "reference": {"arc_easy": 0.5, "params": 9}}
        (search / "summary.json").write_text(json.dumps({**summary, "objectives": objectives}))
        (search / "trials.csv").write_text(
            "number,state,evaluated,arc_easy,params\n0,COMPLETE,True,0.4,5\n1,COMPLETE,True,0.45,7\n2,PRUNED,False,,\n"
        )
        (search / "hypervolume.csv").write_text(f"evaluations,trial,hypervolume\n1,0,0.2\n2,1,{hv}\n")
    (tmp_path / "2_sampler=broken" / ".hydra").mkdir(parents=True)
    (tmp_path / "2_sampler=broken" / STATUS_FILE).write_text(json.dumps({"status": "failed", "error": "ValueError: x"}))
    (tmp_path / "10_sampler=late" / ".hydra").mkdir(parents=True)  # started, not finished
    rows = write_sweep_summary(tmp_path)
    assert [(r["job"], r["status"], r["hypervolume"]) for r in rows] == [
        ("0_sampler=uniform", "completed", 0.41),
        ("1_sampler=grid_params", "completed", 0.47),
        ("2_sampler=broken", "failed", None),
        ("10_sampler=late", "unfinished", None),
    ]
    assert [r["label"] for r in rows] == [
        "0: sampler=uniform",
        "1: sampler=grid_params",
        "2: sampler=broken",
        "10: sampler=late",
    ]
    text = (tmp_path / "sweep_summary.md").read_text()
    assert "0.4700" in text and "- `2_sampler=broken`: ValueError: x" in text
    assert (tmp_path / "sweep_summary.csv").is_file() and (tmp_path / "sweep_summary.png").is_file()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="pipeline", overrides=["experiments=ablation_sampler"], return_hydra_config=True)
    assert cfg.hydra.callbacks.sweep_summary._target_ == "nas.analysis.sweep.SweepSummary"
    assert cfg.hydra.mode.name == "MULTIRUN"
    assert len(str(cfg.hydra.sweeper.params.sampler).split(",")) == 5
