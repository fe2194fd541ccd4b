"""Our prompts and metrics against lm-eval 0.4.13's own task definitions, on the same documents (no model needed)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from nas.data.paths import resolve_data_dir
from nas.errors import DataNotFoundError
from nas.evaluation import mc_metrics
from nas.evaluation.lm_eval_reference import reference_tasks
from nas.evaluation.registry import available_tasks, load_task
from nas.evaluation.task import Selection

try:
    resolve_data_dir()
except DataNotFoundError:
    pytest.skip("needs the offline data folder (NAS_DATA_DIR or ../shared/data)", allow_module_level=True)

# Items per task (per MMLU subject); NAS_PROMPT_CHECK_ALL=1 checks every document of every task.
LIMIT = None if os.environ.get("NAS_PROMPT_CHECK_ALL") else 12
TASKS = [name for name in available_tasks() if name != "mmlu_5shot"] + ["mmlu_5shot"]


def _ours_and_theirs(name: str):
    task = load_task(name, source="local")
    docs = task.load()
    indices, items = task.items(Selection(LIMIT if name not in ("mmlu", "mmlu_5shot") else (LIMIT or 10**6) // 6))
    theirs = reference_tasks(task, [docs[i] for i in indices])
    lm_requests: list[list[tuple[str, str]]] = []
    lm_docs = []
    for lm_task in theirs:
        lm_task.build_all_requests()
        by_doc: dict[int, list] = {}
        for instance in lm_task.instances:
            by_doc.setdefault(instance.doc_id, []).append(instance)
        for doc_id in sorted(by_doc):
            group = sorted(by_doc[doc_id], key=lambda inst: inst.idx)
            lm_requests.append([tuple(inst.arguments) for inst in group])
            lm_docs.append((lm_task, group[0].doc))
    return task, items, lm_requests, lm_docs


@pytest.mark.parametrize("name", TASKS)
def test_requests_equal_lm_eval(name):
    task, items, lm_requests, _ = _ours_and_theirs(name)
    assert len(items) == len(lm_requests) > 0
    for index, (item, theirs) in enumerate(zip(items, lm_requests)):
        assert list(item.requests) == theirs, f"{name} item {index}: requests differ"


@pytest.mark.parametrize("name", ["arc_easy", "hellaswag", "winogrande", "truthfulqa_mc2", "mmlu", "boolq"])
def test_metrics_equal_lm_eval(name):
    """Same log-likelihoods in, same per-item acc / acc_norm / mc2 out as lm-eval's process_results."""
    task, items, _, lm_docs = _ours_and_theirs(name)
    rng = np.random.default_rng(0)
    ours_to_theirs = {"acc": "acc", "acc_norm": "acc_norm", "mc2": "acc"}  # lm-eval names MC2 "acc"
    for item, (lm_task, doc) in zip(items, lm_docs):
        lls = (-rng.gamma(2.0, 5.0, size=len(item.requests))).tolist()
        if len(lls) > 2:
            lls[2] = lls[0]  # a tie, which both must break towards the first choice
        expected = lm_task.process_results(doc, [(ll, False) for ll in lls])
        for metric in task.metrics:
            ours = mc_metrics.ITEM_METRICS[metric](lls, item)
            assert ours == pytest.approx(expected[ours_to_theirs[metric]], abs=1e-12), (name, metric)


def test_gold_index_matches_lm_eval_target():
    task, items, _, lm_docs = _ours_and_theirs("arc_challenge")
    for item, (lm_task, doc) in zip(items, lm_docs):
        assert item.gold == lm_task.doc_to_target(doc)
