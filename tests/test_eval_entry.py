"""`python -m nas.evaluate` composed through Hydra on the tiny model and synthetic data: results.json, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from test_eval_evaluator import write_synthetic_data

from nas.data.sources import MalformedDataError
from nas.errors import DataNotFoundError, NASError
from nas.stages.evaluate import run_evaluation

CONF = str(Path(__file__).resolve().parents[1] / "conf")
FAST = ["model=tiny_llama", "search_space=layers_only", "evaluator.progress=false", "speed.repeats=1"]
FAST += ["speed.batch_size=1", "speed.prompt_len=8", "speed.new_tokens=2", "speed.warmup=0"]


def compose_evaluate(overrides: list[str]):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="evaluate", overrides=FAST + overrides)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_synthetic_data(tmp_path_factory.mktemp("data"))


def test_results_json_has_scores_cost_and_speed(data_dir, tmp_path):
    cfg = compose_evaluate([f"paths.data_dir={data_dir}", "subnet=smallest", "task=[arc_easy,winogrande]", "limit=4"])
    output = run_evaluation(cfg, tmp_path)
    written = json.loads((tmp_path / "results.json").read_text())
    assert written == json.loads(json.dumps(output))
    assert set(written["tasks"]) == {"arc_easy", "winogrande"}
    assert written["tasks"]["arc_easy"]["num_items"] == 4 and written["tasks"]["winogrande"]["num_items"] == 3
    assert written["tasks"]["arc_easy"]["metric"] == "acc_norm"
    assert written["subnetwork"]["layers"] == [0, 1]  # layers_only's smallest keeps half of 4 layers
    assert written["cost"]["params"] > 0 and written["speed"]["prefill_tokens_per_s"] > 0
    assert written["selection"] == {"limit": 4, "mode": "first", "seed": 0}
    # lm-eval's own layout beside ours: what lm-eval's tooling and W&B's lm-eval views read.
    arc = written["tasks"]["arc_easy"]["metrics"]
    assert written["results"]["arc_easy"]["acc_norm,none"] == arc["acc_norm"]
    assert written["results"]["arc_easy"]["acc_stderr,none"] == arc["acc_stderr"]
    assert written["n-samples"]["arc_easy"] == {"original": 7, "effective": 4}
    assert written["configs"]["winogrande"]["task"] == "winogrande" and written["n-shot"]["winogrande"] == 0
    assert set(written["versions"]) == {"arc_easy", "winogrande"} and written["lm_eval_version"] == "0.4.13"


def test_bad_data_fails_before_writing_anything(data_dir, tmp_path):
    broken = tmp_path / "data"
    write_synthetic_data(broken)
    (broken / "winogrande" / "dev.jsonl").write_text("{not json}\n")
    cfg = compose_evaluate([f"paths.data_dir={broken}", "task=[arc_easy,winogrande]", "speed=null"])
    out = tmp_path / "run"
    with pytest.raises(MalformedDataError, match="dev.jsonl, line 1"):
        run_evaluation(cfg, out)
    assert not out.exists()


def test_bad_sub_network_is_named(data_dir, tmp_path):
    cfg = compose_evaluate([f"paths.data_dir={data_dir}", "subnet=tiniest"])
    with pytest.raises(NASError, match="tiniest"):
        run_evaluation(cfg, tmp_path)


def test_any_lm_eval_task_composes_by_name():
    cfg = compose_evaluate(["task=[arc_easy,lambada_openai,mmlu_stem]", "task.lambada_openai.num_fewshot=2"])
    assert list(cfg.task) == ["arc_easy", "lambada_openai", "mmlu_stem"]
    assert cfg.task.arc_easy.metric == "acc_norm"  # our file in conf/task/
    assert cfg.task.lambada_openai.name == "lambada_openai" and cfg.task.lambada_openai.num_fewshot == 2
    assert cfg.task.mmlu_stem._target_ == "nas.evaluation.task.LMEvalTask"


def test_a_task_without_data_fails_before_the_model_loads(data_dir, tmp_path, monkeypatch):
    from nas.data import lm_eval_data
    from nas.stages import evaluate as evaluate_stage

    monkeypatch.setattr(lm_eval_data, "hub_reachable", lambda: False)
    loaded = []
    real_instantiate = evaluate_stage.instantiate
    monkeypatch.setattr(
        evaluate_stage, "instantiate", lambda node, **kw: loaded.append(node) or real_instantiate(node, **kw)
    )
    cfg = compose_evaluate([f"paths.data_dir={data_dir}", "task=[arc_easy,lambada_openai]", "speed=null"])
    out = tmp_path / "run"
    with pytest.raises(DataNotFoundError) as info:
        run_evaluation(cfg, out)
    message = str(info.value)
    assert "lambada_openai" in message and "EleutherAI/lambada_openai" in message
    assert "task.lambada_openai.datasets" in message
    assert not loaded and not out.exists()  # no model, no evaluator, nothing written
