"""Item for item against `lm_eval.simple_evaluate` + HFLM on the tiny model, offline, for every output type lm-eval
has: multiple choice (ARC-Easy, HellaSwag, MMLU 5-shot, TruthfulQA MC2, WinoGrande, PIQA, BoolQ), `loglikelihood`
(LAMBADA on a stand-in local copy of its format), `generate_until` (GSM8K) and `loglikelihood_rolling`
(WikiText), plus a task of the user's own YAML through `include_path`. Same requests, same responses, same
per-item metrics, same aggregates."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nas.data.paths import resolve_data_dir
from nas.errors import DataNotFoundError
from nas.evaluation.evaluator import Evaluator
from nas.evaluation.lm_eval_reference import make_hflm, reference_for, reference_items, run_reference
from nas.evaluation.registry import load_task
from nas.evaluation.task import LMEvalTask

try:
    resolve_data_dir()
except DataNotFoundError:
    pytest.skip("needs the offline data folder (NAS_DATA_DIR or ../shared/data)", allow_module_level=True)

# Items per task (MMLU: per subject, 57 subjects).
ITEMS = {
    "arc_easy": 4,
    "hellaswag": 3,
    "mmlu_5shot": 1,
    "truthfulqa_mc2": 3,
    "winogrande": 4,
    "piqa": 4,
    "boolq": 3,
    "gsm8k": 2,
    "wikitext": 2,
    "lambada_openai": 4,
    "capitals": 3,
}

LAMBADA = [
    "the cat sat on the warm mat and then it slept",
    "she opened the old door and found the key",
    "rain fell all night so the river rose",
    "he played the piano every morning before school",
]
CAPITALS_YAML = """task: capitals
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
output_type: multiple_choice
test_split: test
doc_to_text: "Question: What is the capital of {{{{country}}}}?\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""
CAPITALS = [
    {"country": "France", "choices": ["Paris", "Rome", "Oslo"], "answer": 0},
    {"country": "Italy", "choices": ["Madrid", "Rome"], "answer": 1},
    {"country": "Norway", "choices": ["Oslo", "Bern", "Lima", "Kyiv"], "answer": 0},
]


def user_files(root: Path) -> tuple[Path, Path]:
    """A stand-in LAMBADA (its hub format: one `text` per item, a `test` split) and a user's YAML task folder."""
    lambada = root / "lambada"
    lambada.mkdir(parents=True)
    (lambada / "test.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in LAMBADA))
    tasks = root / "my_tasks"
    tasks.mkdir()
    (tasks / "capitals.jsonl").write_text("".join(json.dumps(d) + "\n" for d in CAPITALS))
    (tasks / "capitals.yaml").write_text(CAPITALS_YAML.format(data=tasks / "capitals.jsonl"))
    return lambada, tasks


def make_tasks(root: Path) -> list[LMEvalTask]:
    lambada, tasks = user_files(root)
    named = [load_task(name, source="local") for name in ITEMS if name not in ("lambada_openai", "capitals")]
    named.append(load_task("lambada_openai", datasets={"EleutherAI/lambada_openai": str(lambada)}))
    named.append(load_task("capitals", include_path=str(tasks)))
    return named


@pytest.fixture(scope="module")
def both(tiny, tmp_path_factory):
    """Our evaluator's results and lm-eval's output on the same documents of every task, full network."""
    model, tokenizer = tiny
    evaluators = {
        task.name: Evaluator.for_model(
            model,
            tokenizer,
            [task],
            limit=ITEMS[task.name],
            limit_mode="random",
            seed=5,
            progress=False,
            generation_batch_size=1,
        )
        for task in make_tasks(tmp_path_factory.mktemp("user"))
    }
    ours = {name: ev.evaluate(model, with_items=True)[name] for name, ev in evaluators.items()}
    references = {name: reference_for(ev.tasks[name]) for name, ev in evaluators.items()}
    outputs = run_reference(make_hflm(model, tokenizer, batch_size=1), list(references.values()))
    return evaluators, ours, references, outputs


@pytest.mark.parametrize("name", list(ITEMS))
def test_same_requests_responses_and_item_metrics(both, name):
    evaluators, ours, references, outputs = both
    built = evaluators[name].tasks[name]
    theirs = reference_items(outputs[name], references[name])
    mine = ours[name].items
    assert len(mine) == len(theirs) == built.num_items > 0
    kinds = {doc.request_type for doc in built.docs}
    for doc, item, ref in zip(built.docs, mine, theirs):
        where = f"{name} doc {item['doc_index']}"
        assert [tuple(i.args) for i in doc.instances] == ref["requests"], where
        if "generated" in item:
            assert item["generated"] == ref["resps"], where
        elif doc.request_type == "loglikelihood_rolling":
            np.testing.assert_allclose(item["lls"], ref["resps"], rtol=1e-5, err_msg=where)
        else:
            np.testing.assert_allclose(item["lls"], [r[0] for r in ref["resps"]], rtol=1e-5, atol=2e-3, err_msg=where)
            assert item["is_greedy"] == [bool(r[1]) for r in ref["resps"]], where
        for metric, value in ref.items():
            if metric not in ("requests", "resps"):
                np.testing.assert_allclose(
                    np.asarray(item[metric], float),
                    np.asarray(value, float),
                    rtol=1e-5,
                    atol=1e-6,
                    err_msg=f"{where} {metric}",
                )
    assert kinds <= {"loglikelihood", "loglikelihood_rolling", "generate_until"}


@pytest.mark.parametrize("name", list(ITEMS))
def test_same_aggregates_in_lm_eval_layout(both, name):
    evaluators, ours, _, outputs = both
    evaluator = evaluators[name]
    layout = evaluator.lm_eval_results({name: ours[name]})
    lm_eval_name = evaluator.tasks[name].task.lm_eval_name
    theirs = outputs[name]["results"][lm_eval_name]
    mine = layout["results"][name]
    metrics = [k for k in theirs if "," in k and "_stderr" not in k]
    assert metrics and set(metrics) <= set(mine)
    for key in metrics:
        assert mine[key] == pytest.approx(theirs[key], rel=1e-5), key
    assert layout["n-samples"]  # and every sub-task's config, version and n-shot beside them
    assert set(layout["configs"]) == set(layout["versions"]) == set(layout["n-shot"])


def test_each_output_type_is_covered(both):
    evaluators = both[0]
    kinds = {name: {d.request_type for d in ev.tasks[name].docs} for name, ev in evaluators.items()}
    assert kinds["gsm8k"] == {"generate_until"} and kinds["wikitext"] == {"loglikelihood_rolling"}
    assert kinds["lambada_openai"] == {"loglikelihood"} and kinds["capitals"] == {"loglikelihood"}
    assert len(evaluators["mmlu_5shot"].tasks["mmlu_5shot"].tree.leaves) == 57


def test_batched_generation_with_a_shared_prefix_gives_the_same_answers(tiny):
    """gsm8k_cot's contexts share lm-eval's eight fixed solved problems: read once per batch and lent to every row
    as a KV cache, the answers equal those of one request at a time (HFLM's computation, proven above on gsm8k)."""
    model, tokenizer = tiny
    task = load_task("gsm8k_cot", source="local")
    make = lambda **kw: Evaluator.for_model(model, tokenizer, [task], limit=3, progress=False, **kw)  # noqa: E731
    alone, batched = make(generation_batch_size=1), make(generation_batch_size=8)
    rows = [tokenizer(g.context)["input_ids"] for *_, g in batched.tasks["gsm8k_cot"].generation]
    assert batched.generator.shared_prefix(rows) > 0.8 * min(len(r) for r in rows)  # the eight solved problems
    texts = [[i["generated"] for i in e.evaluate(model, with_items=True)["gsm8k_cot"].items] for e in (alone, batched)]
    assert texts[0] == texts[1] and len(texts[0]) == 3
