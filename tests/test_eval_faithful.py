"""Slow: on the real SmolLM2-135M, our ten configured tasks give item for item the requests, log-likelihoods and
metrics of lm-eval 0.4.13's own pipeline (`lm_eval.simple_evaluate` + HFLM) on the same documents and the same
live model (full network and a sub-network). NAS_FAITHFUL_ITEMS scales the number of items per task."""

from __future__ import annotations

import os

import numpy as np
import pytest

from nas.evaluation.evaluator import Evaluator
from nas.evaluation.lm_eval_reference import make_hflm, reference_for, reference_items, run_reference
from nas.evaluation.registry import load_task
from nas.evaluation.task import LMEvalTask

pytestmark = pytest.mark.slow

SCALE = float(os.environ.get("NAS_FAITHFUL_ITEMS", "1"))
# Items per task (MMLU: per subject), sized so both tests together take about three minutes on 2 cores;
# NAS_FAITHFUL_ITEMS=10 checks ten times as many (except MMLU's one per subject).
ITEMS = {
    "arc_easy": 20,
    "arc_challenge": 20,
    "hellaswag": 10,
    "piqa": 16,
    "boolq": 10,
    "winogrande": 24,
    "truthfulqa_mc1": 6,
    "truthfulqa_mc2": 6,
    "mmlu": 1,
    "mmlu_5shot": 1,
}
# The sub-network (half the layers, half the MLP) is checked on fewer tasks and items.
SUB_ITEMS = {"arc_challenge": 12, "hellaswag": 6, "winogrande": 16, "truthfulqa_mc2": 4, "mmlu_5shot": 1}
# MMLU 5-shot on four subjects (a group of lm-eval's own subject tasks, in lm-eval's YAML format).
MMLU_FOUR = """group: mmlu_four
task: [mmlu_abstract_algebra, mmlu_high_school_biology, mmlu_moral_scenarios, mmlu_virology]
aggregate_metric_list:
  - metric: acc
    weight_by_size: true
metadata:
  version: 1
"""


def make_task(name: str, folder) -> LMEvalTask:
    if name != "mmlu_5shot":
        return load_task(name, source="local")
    (folder / "mmlu_four.yaml").write_text(MMLU_FOUR)
    return load_task(name, task="mmlu_four", include_path=str(folder), source="local")


def run_both(model, tokenizer, items, folder, sub=None):
    """Our evaluators and results, lm-eval's references and output, on `sub` (None: full network)."""
    evaluators, ours = {}, {}
    for name, n in items.items():
        limit = max(1, round(n * SCALE)) if name not in ("mmlu", "mmlu_5shot") else n
        evaluators[name] = Evaluator.for_model(
            model, tokenizer, [make_task(name, folder)], limit=limit, limit_mode="random", seed=7, progress=False
        )
        ours[name] = evaluators[name].evaluate(model, sub, with_items=True)[name]
    references = {name: reference_for(ev.tasks[name]) for name, ev in evaluators.items()}
    lm = make_hflm(model, tokenizer, batch_size=16)
    if sub is None:
        outputs = run_reference(lm, list(references.values()))
    else:
        with model.sub_network(sub):
            outputs = run_reference(lm, list(references.values()))
    return evaluators, ours, references, outputs


def check(evaluators, ours, references, outputs):
    for name, evaluator in evaluators.items():
        built = evaluator.tasks[name]
        theirs = reference_items(outputs[name], references[name])
        assert len(ours[name].items) == len(theirs) > 0, name
        for doc, mine, ref in zip(built.docs, ours[name].items, theirs):
            where = f"{name} doc {mine['doc_index']}"
            assert [tuple(i.args) for i in doc.instances] == ref["requests"], where
            np.testing.assert_allclose(mine["lls"], [r[0] for r in ref["resps"]], rtol=1e-4, atol=2e-3, err_msg=where)
            for metric, value in ref.items():
                if metric in ("requests", "resps"):
                    continue
                if value in (0, 1):  # right or wrong: exactly lm-eval's
                    assert mine[metric] == value, (where, metric)
                else:  # graded (TruthfulQA MC2's probability mass): within the log-likelihoods' float noise
                    assert mine[metric] == pytest.approx(value, abs=1e-4), (where, metric)
        lm_results = outputs[name]["results"][built.task.lm_eval_name]
        layout = evaluator.lm_eval_results({name: ours[name]})["results"][name]
        for key in (k for k in lm_results if "," in k and "_stderr" not in k):
            assert layout[key] == pytest.approx(lm_results[key], abs=1e-5), (name, key)


@pytest.mark.parametrize("which", ["full", "sub-network"])
def test_predictions_equal_lm_eval_simple_evaluate(smollm2, which, tmp_path):
    model, tokenizer = smollm2
    sub = None
    if which == "sub-network":
        from nas.supernet.subnetwork import SubNetwork

        shape = model.shape
        keep = tuple(range(0, shape.num_layers, 2)) + (shape.num_layers - 1,)
        keep = tuple(sorted(set(keep)))
        sub = SubNetwork(
            keep,
            tuple(shape.intermediate_size // 2 for _ in keep),
            tuple(shape.num_heads for _ in keep),
            shape.hidden_size,
        )
    check(*run_both(model, tokenizer, ITEMS if sub is None else SUB_ITEMS, tmp_path, sub))
