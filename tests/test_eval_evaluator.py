"""The evaluation loop on the tiny random Llama: same log-likelihoods as lm-eval's HFLM, prefix sharing,
batching, the results cache and `limit`, all on small synthetic data files in the local layout (MMLU as a
group of two subjects, defined by a YAML of lm-eval's own format through `include_path`)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from nas.evaluation import evaluator as evaluator_module
from nas.evaluation.built_task import RowGroup, plan_prefixes
from nas.evaluation.evaluator import Evaluator
from nas.evaluation.packing import PackedRow
from nas.evaluation.registry import load_task
from nas.evaluation.task import LMEvalTask, Selection
from nas.supernet.subnetwork import SubNetwork

QUESTIONS = [
    ("What do plants need?", ["light", "rocks", "plastic bags", "loud music"], "A"),
    ("Which is a mammal?", ["shark", "whale", "trout"], "2"),
    ("Water boils at", ["100 C at sea level", "10 C", "0 C", "50 C", "1000 C"], "A"),
    ("The sun is a", ["planet", "star", "moon", "comet"], "B"),
    ("Ice is", ["hot", "solid water", "a gas", "a metal"], "B"),
    ("Two plus two is", ["three", "four", "five", "twenty-two"], "B"),
    ("Birds have", ["feathers", "scales", "gills", "fins"], "A"),
]


def write_synthetic_data(root: Path) -> Path:
    """A data folder in the ../shared/data layout: ARC-Easy test and dev (the search's validation split, the same
    questions), two MMLU subjects (test + dev), WinoGrande."""
    (root / "arc").mkdir(parents=True)
    for split in ("Test", "Dev"):
        with (root / "arc" / f"ARC-Easy-{split}.jsonl").open("w") as f:
            for i, (stem, texts, key) in enumerate(QUESTIONS):
                labels = [str(j + 1) for j in range(len(texts))] if key.isdigit() else list("ABCDE"[: len(texts)])
                choices = [{"text": t, "label": label} for t, label in zip(texts, labels)]
                f.write(
                    json.dumps({"id": f"q{i}", "question": {"stem": stem, "choices": choices}, "answerKey": key}) + "\n"
                )
    for split in ("test", "dev"):
        (root / "mmlu" / split).mkdir(parents=True)
        for subject in ("anatomy", "virology"):
            rows = [
                f'"{subject} question {i}?",alpha {i},beta,"gamma, delta",epsilon,{"ABCD"[i % 4]}' for i in range(6)
            ]
            (root / "mmlu" / split / f"{subject}_{split}.csv").write_text("\n".join(rows) + "\n")
    (root / "winogrande").mkdir()
    rows = [
        {
            "sentence": "The cup fell off the table because _ was slippery.",
            "option1": "the cup",
            "option2": "the table",
            "answer": "2",
        },
        {
            "sentence": "Anna gave Maria a gift because _ was kind.",
            "option1": "Anna",
            "option2": "Maria",
            "answer": "1",
        },
        {"sentence": "_ ran faster than the turtle.", "option1": "The hare", "option2": "The snail", "answer": "1"},
    ]
    (root / "winogrande" / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "tasks").mkdir()
    (root / "tasks" / "mmlu_two.yaml").write_text(MMLU_TWO)
    return root


# lm-eval's mmlu group cut to the two subjects of the synthetic data: a user's group YAML (lm-eval's format).
MMLU_TWO = """group: mmlu_two
task:
  - mmlu_anatomy
  - mmlu_virology
aggregate_metric_list:
  - metric: acc
    weight_by_size: true
metadata:
  version: 1
"""


def two_subjects(data_dir: Path, name: str = "mmlu", num_fewshot: int | None = None):
    """MMLU on the two synthetic subjects (lm-eval's definitions, through the user group above)."""
    return LMEvalTask(
        name,
        "mmlu_two",
        num_fewshot=num_fewshot,
        search_split="validation",
        source="local",
        include_path=str(data_dir / "tasks"),
    )


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_synthetic_data(tmp_path_factory.mktemp("data"))


def tasks(data_dir: Path):
    five_shot = two_subjects(data_dir, "mmlu_5shot", num_fewshot=5)
    return [
        load_task("arc_easy", source="local"),
        load_task("winogrande", source="local"),
        two_subjects(data_dir),
        five_shot,
    ]


def hflm_loglikelihoods(model, tokenizer, requests):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=4)
    instances = [Instance("loglikelihood", {}, request, i) for i, request in enumerate(requests)]
    return lm.loglikelihood(instances, disable_tqdm=True)


def all_lls(evaluator, results):
    return np.concatenate(
        [np.concatenate([np.array(d["lls"]) for d in results[name].items]) for name in evaluator.tasks]
    )


@pytest.mark.parametrize("sub_kind", ["full", "sub"])
def test_loglikelihoods_equal_hflm(tiny, data_dir, sub_kind):
    """Every request's log-likelihood and is_greedy equal lm-eval's HFLM on the live (sub-)network."""
    model, tokenizer = tiny
    sub = None if sub_kind == "full" else SubNetwork((0, 2, 3), (64, 128, 32), (2, 4, 2), 64)
    evaluator = Evaluator.for_model(
        model, tokenizer, tasks(data_dir), data_dir=data_dir, progress=False, batch_tokens=512
    )
    results = evaluator.evaluate(model, sub, with_items=True)
    requests = [inst.args for built in evaluator.tasks.values() for doc in built.docs for inst in doc.instances]
    context = model.sub_network(sub) if sub is not None else torch.no_grad()
    with context:
        expected = hflm_loglikelihoods(model, tokenizer, requests)
    ours = all_lls(evaluator, results)
    np.testing.assert_allclose(ours, [ll for ll, _ in expected], rtol=1e-5, atol=1e-4)
    greedy = [g for name in evaluator.tasks for d in results[name].items for g in d["is_greedy"]]
    assert greedy == [g for _, g in expected]


def test_prefix_sharing_and_batching_change_nothing(tiny, data_dir):
    model, tokenizer = tiny
    sub = SubNetwork((1, 3), (96, 128), (4, 4), 48)
    shared = Evaluator.for_model(model, tokenizer, tasks(data_dir), data_dir=data_dir, progress=False)
    unshared = Evaluator.for_model(
        model, tokenizer, tasks(data_dir), data_dir=data_dir, progress=False, share_prefix=False
    )
    one_by_one = Evaluator.for_model(
        model, tokenizer, tasks(data_dir), data_dir=data_dir, progress=False, batch_tokens=1
    )
    runs = [e.evaluate(model, sub, with_items=True) for e in (shared, unshared, one_by_one)]
    reference = all_lls(shared, runs[0])
    for evaluator, result in zip((unshared, one_by_one), runs[1:]):
        np.testing.assert_allclose(all_lls(evaluator, result), reference, rtol=1e-5, atol=1e-4)
        for name in shared.tasks:
            assert [d["acc"] for d in result[name].items] == [d["acc"] for d in runs[0][name].items]
    # Sharing reads fewer tokens: the context once per question instead of once per choice, and the
    # 5-shot examples once per subject instead of once per question.
    tokens = lambda e: sum(built.num_tokens() for built in e.tasks.values())  # noqa: E731
    assert tokens(shared) < 0.6 * tokens(unshared)
    assert all(len(g.prefix) > 100 for g in shared.tasks["mmlu_5shot"].plan())
    assert not any(g.prefix for g in unshared.tasks["mmlu_5shot"].plan())
    assert len(one_by_one.tasks["arc_easy"].batches(1, 64)) == len(QUESTIONS)


def test_scored_positions_go_through_the_head_once_whatever_the_batches(tiny, data_dir, monkeypatch):
    """The head runs on each distinct scored position once (MMLU's four one-token choices read one position),
    gathered over batches: flushed after every batch, after many, or with the whole forward (a model whose head
    cannot run apart), the same log-likelihoods and greedy flags."""
    from nas.evaluation import loglikelihood

    model, tokenizer = tiny
    sub = SubNetwork((0, 1, 3), (128, 64, 96), (4, 2, 4), 64)
    head_rows: list[int] = []

    def run() -> tuple[Evaluator, dict]:
        evaluator = Evaluator.for_model(model, tokenizer, tasks(data_dir), data_dir=data_dir, progress=False)
        return evaluator, evaluator.evaluate(model, sub, with_items=True)

    def flags(results: dict) -> list:
        return [g for name in results for d in results[name].items for g in d["is_greedy"]]

    hook = model.get_output_embeddings().register_forward_hook(lambda m, args, out: head_rows.append(len(args[0])))
    try:
        evaluator, gathered = run()
        distinct = sum(head_rows)
        scored = sum(len(b.score_target) for t in evaluator.tasks.values() for b in t.batches(512, 64))
        assert distinct < scored  # one-token choices share their position
        monkeypatch.setattr(loglikelihood, "HEAD_ROWS", 1)
        head_rows.clear()
        per_batch = run()[1]
        assert sum(head_rows) == distinct and len(head_rows) > 1
        monkeypatch.setattr(loglikelihood, "_separable_head", lambda model: False)
        whole = run()[1]
    finally:
        hook.remove()
    for other in (per_batch, whole):
        for name in gathered:
            np.testing.assert_allclose(
                np.concatenate([d["lls"] for d in other[name].items]),
                np.concatenate([d["lls"] for d in gathered[name].items]),
                rtol=1e-6,
                atol=1e-5,
            )
        assert flags(other) == flags(gathered)


def test_results_are_cached_by_sub_network_and_weights(tiny, data_dir, monkeypatch):
    model, tokenizer = tiny
    calls = []
    original = evaluator_module.score_batches
    monkeypatch.setattr(evaluator_module, "score_batches", lambda *a, **k: calls.append(1) or original(*a, **k))
    evaluator = Evaluator.for_model(
        model, tokenizer, [load_task("arc_easy", source="local")], data_dir=data_dir, progress=False
    )
    small = SubNetwork((0,), (32,), (2,), 64)
    first = evaluator.evaluate(model, small)
    again = evaluator.evaluate(model, small)
    assert len(calls) == 1 and again["arc_easy"].cached and not first["arc_easy"].cached
    assert again["arc_easy"].metrics == first["arc_easy"].metrics
    evaluator.evaluate(model)  # another sub-network (the full one): evaluated
    assert len(calls) == 2
    with torch.no_grad():
        model.lm_head.weight.mul_(1.5)  # tied with the embedding: different weights, a different checkpoint
    try:
        evaluator.evaluate(model, small)
    finally:
        with torch.no_grad():
            model.lm_head.weight.div_(1.5)
    assert len(calls) == 3
    evaluator.evaluate(model, small, checkpoint_id="ckpt-a")
    evaluator.evaluate(model, small, checkpoint_id="ckpt-a")
    assert len(calls) == 4


def test_cache_file_survives_a_new_process(tiny, data_dir, tmp_path):
    model, tokenizer = tiny
    path = tmp_path / "cache.jsonl"
    make = lambda: Evaluator.for_model(  # noqa: E731
        model, tokenizer, [load_task("arc_easy", source="local")], data_dir=data_dir, progress=False, cache_file=path
    )
    first = make().evaluate(model, checkpoint_id="c")["arc_easy"]
    second = make().evaluate(model, checkpoint_id="c")["arc_easy"]
    assert second.cached and second.score == first.score and path.read_text().count("\n") == 1


def test_limit_first_random_and_per_group(data_dir, caplog):
    arc = load_task("arc_easy", source="local")
    indices = lambda task, selection: [d.index for d in task.requests(selection, data_dir)]  # noqa: E731
    assert indices(arc, Selection(3)) == [0, 1, 2]
    picked = indices(arc, Selection(3, "random", seed=1))
    assert picked == indices(arc, Selection(3, "random", seed=1)) and picked == sorted(picked) and len(picked) == 3
    assert any(indices(arc, Selection(3, "random", seed=s)) != picked for s in range(2, 6))
    assert indices(two_subjects(data_dir), Selection(2)) == [0, 1, 6, 7]  # the first two of each subject
    with caplog.at_level(logging.WARNING):
        assert indices(arc, Selection(100)) == list(range(len(QUESTIONS)))
    assert sum("more than the" in r.message for r in caplog.records) == 1


def test_scores_and_stderr(tiny, data_dir):
    model, tokenizer = tiny
    evaluator = Evaluator.for_model(model, tokenizer, tasks(data_dir), data_dir=data_dir, progress=False)
    results = evaluator.evaluate(model, with_items=True)
    arc = results["arc_easy"]
    accs = [float(d["acc"]) for d in arc.items]
    assert arc.metrics["acc"] == pytest.approx(np.mean(accs))
    assert arc.metrics["acc_stderr"] == pytest.approx(np.std(accs, ddof=1) / np.sqrt(len(accs)))
    assert arc.score == arc.metrics["acc_norm"] and arc.num_items == len(QUESTIONS)
    mmlu = results["mmlu"]
    assert set(mmlu.groups) == {"mmlu_anatomy", "mmlu_virology"} and mmlu.num_items == 12
    assert mmlu.score == pytest.approx(np.mean([d["acc"] for d in mmlu.items]))  # lm-eval's size-weighted mean
    assert 0.0 <= results["mmlu_5shot"].score <= 1.0 and 0.0 < arc.forward_share <= 1.0


def test_rows_of_groups_without_a_shared_prefix_share_batches(tiny, data_dir):
    model, tokenizer = tiny
    mmlu = two_subjects(data_dir)
    evaluator = Evaluator.for_model(model, tokenizer, [mmlu], limit=1, data_dir=data_dir, progress=False)
    built = evaluator.tasks["mmlu"]
    assert len(built.groups) == 2 and len(built.plan()) == 1  # one item per subject: one pool
    (batch,) = built.batches(4096, 64)
    assert batch.input_ids.shape[0] == 2


def test_prefix_common_to_all_groups_runs_once_for_mixed_batches(tiny, data_dir):
    """MMLU's subject headers share their opening words: run once and lent to batches of both subjects."""
    model, tokenizer = tiny  # a near character-level tokenizer: the headers are about 90 tokens
    mmlu = two_subjects(data_dir)
    evaluator = Evaluator.for_model(model, tokenizer, [mmlu], data_dir=data_dir, progress=False, forward_cost=300)
    built = evaluator.tasks["mmlu"]
    assert [len(g.rows) for g in built.plan()] == [6, 6]  # a forward pass costing 16 tokens: per subject
    # Costing 300: 5 rows x 90 tokens do not pay for two passes per subject; 11 x 65 pay for one.
    (pool,) = built.plan(300)
    assert tokenizer.decode(pool.prefix) == "The following are multiple choice questions (with answers) about "
    (batch,) = built.batches(4096, 64, 300)
    assert batch.prefix is not None and batch.input_ids.shape[0] == 12
    assert built.num_tokens(300) == sum(len(r) for g in built.groups for r in g.rows) - 11 * len(pool.prefix)
    assert not built.plan(10**6)[0].prefix  # a forward pass dearer than any saving: nothing split off
    sub = SubNetwork((0, 2), (64, 96), (4, 2), 64)
    per_subject = Evaluator.for_model(model, tokenizer, [mmlu], data_dir=data_dir, progress=False)
    ours, theirs = (e.evaluate(model, sub, with_items=True) for e in (evaluator, per_subject))
    np.testing.assert_allclose(all_lls(evaluator, ours), all_lls(per_subject, theirs), rtol=1e-5, atol=1e-4)


def _row(tokens: list[int]) -> PackedRow:
    n = len(tokens)
    return PackedRow(tuple(tokens), tuple(range(n)), (0,) * n, (n - 1,), (0,), (0,))


def test_plan_prefixes_splits_only_what_pays():
    header, shots = list(range(1, 11)), list(range(100, 140))
    big = RowGroup((), [_row(header + shots + [200 + i, 7]) for i in range(4)], [0, 1, 2, 3])
    small = [
        RowGroup((), [_row(header + [300 + g, 400 + i, 7]) for i in range(2)], [10 * g, 10 * g + 1]) for g in range(9)
    ]
    grouped, pool = plan_prefixes([big, *small], min_group_prefix=32, forward_cost=16)
    # 3 rows x 50 tokens saved > 2 forward passes; the small groups' 11 shared tokens are under
    # min_group_prefix, but the 10 tokens all 18 pooled rows share pay (17 x 10 > 16).
    assert grouped.prefix == tuple(header + shots) and grouped.offsets == [0, 1, 2, 3]
    assert pool.prefix == tuple(header) and len(pool.rows) == 18
    assert all(r.positions[0] == 10 for r in pool.rows)  # positions stay absolute after the prefix
    (alone,) = plan_prefixes([big, *small], min_group_prefix=32, forward_cost=1000)
    assert not alone.prefix and len(alone.rows) == 22
    short = [RowGroup((), [_row([1, 2, 300 + i, 7])], [i]) for i in range(40)]
    (pool,) = plan_prefixes(short)  # 39 x 2 tokens would pay, but under MIN_POOL_PREFIX: not split
    assert not pool.prefix
