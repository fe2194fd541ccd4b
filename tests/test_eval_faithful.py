"""Slow: on the real SmolLM2-135M, every task gives item-for-item the predictions of lm-eval 0.4.13's own
task definition run through `lm_eval.simple_evaluate` with HFLM on the same documents and the same live
model (full network and a sub-network). NAS_FAITHFUL_ITEMS scales the number of items per task."""

from __future__ import annotations

import os

import numpy as np
import pytest

from nas.evaluation.evaluator import Evaluator
from nas.evaluation.lm_eval_reference import make_hflm, reference_items, reference_tasks, run_reference
from nas.evaluation.registry import load_task

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
MMLU_5SHOT_SUBJECTS = ["abstract_algebra", "high_school_biology", "moral_scenarios", "virology"]
OUR_TO_LM_EVAL = {"acc": "acc", "acc_norm": "acc_norm", "mc2": "acc"}  # lm-eval names MC2 "acc"


def run_both(model, tokenizer, items, sub=None):
    """Our results and lm-eval's per-item results for every task, on `sub` (None: full network)."""
    ours, theirs = {}, {}
    for name, n in items.items():
        options = {"documents": {"subjects": MMLU_5SHOT_SUBJECTS}} if name == "mmlu_5shot" else {}
        task = load_task(name, source="local", **options)
        limit = max(1, round(n * SCALE)) if name not in ("mmlu", "mmlu_5shot") else n
        evaluator = Evaluator.for_model(
            model, tokenizer, [task], limit=limit, limit_mode="random", seed=7, progress=False
        )
        ours[name] = (evaluator, evaluator.evaluate(model, sub, with_items=True)[name])
    reference = {
        name: reference_tasks(ev.tasks[name].task, [ev.tasks[name].task.load()[i] for i in ev.tasks[name].doc_indices])
        for name, (ev, _) in ours.items()
    }
    lm = make_hflm(model, tokenizer, batch_size=16)
    if sub is None:
        output = run_reference(lm, [t for ts in reference.values() for t in ts])
    else:
        with model.sub_network(sub):
            output = run_reference(lm, [t for ts in reference.values() for t in ts])
    for name, tasks in reference.items():
        theirs[name] = reference_items(output, tasks)
    return ours, theirs, output


def check(ours, theirs, output):
    for name, (evaluator, result) in ours.items():
        built = evaluator.tasks[name]
        assert len(result.items) == len(theirs[name]) > 0, name
        for index, (mine, ref, item) in enumerate(zip(result.items, theirs[name], built.items)):
            where = f"{name} item {index} (doc {mine['doc_index']})"
            assert list(item.requests) == ref["requests"], where
            np.testing.assert_allclose(mine["lls"], ref["lls"], rtol=1e-4, atol=2e-3, err_msg=where)
            assert mine["pred"] == ref["pred"], where
            assert mine["pred_norm"] == ref["pred_norm"], where
            for metric in built.task.metrics:
                their_value = ref[OUR_TO_LM_EVAL[metric]] if metric != "mc2" else None
                if their_value is not None:
                    assert mine[metric] == their_value, (where, metric)
        if name not in ("mmlu", "mmlu_5shot"):
            lm_results = output["results"][built.task.name]
            for metric in built.task.metrics:
                assert result.metrics[metric] == pytest.approx(lm_results[f"{OUR_TO_LM_EVAL[metric]},none"], abs=1e-6)


@pytest.mark.parametrize("which", ["full", "sub-network"])
def test_predictions_equal_lm_eval_simple_evaluate(smollm2, which):
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
    check(*run_both(model, tokenizer, ITEMS if sub is None else SUB_ITEMS, sub))
