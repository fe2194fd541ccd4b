"""Group tails (what a pooled group's rows share after the pool prefix, MMLU's subject) run once: planned only
where they pay, each row's mask opening its own tail's keys only, and every request's log-likelihood and greediness
equal to a separate forward pass of its own tokens (Llama; Mistral and Qwen2 with a sliding window shorter than the
rows), on the evaluation's own pass and on transformers' decoder, on the full network and on a sub-network."""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest
import torch
from test_eval_sliding_window import WINDOW, assert_scores_equal_separate_passes

from nas import load_model
from nas.evaluation import loglikelihood
from nas.evaluation.batching import Batch, Tails, make_batches
from nas.evaluation.built_task import RowGroup, plan_prefixes
from nas.evaluation.packing import pack
from nas.evaluation.requests import EncodedRequest
from nas.evaluation.scored_pass import KEY_ALIGN, key_gap


def subject_documents(seed: int, vocab: int, per_subject: int) -> list[list[list[EncodedRequest]]]:
    """Per subject, documents of one-token choices (MMLU's) or longer ones after a header opening every document
    shares, then the subject's own words (2-6 tokens), then the question."""
    rng = random.Random(seed)
    opening = [rng.randrange(3, vocab) for _ in range(10)]
    subjects = []
    for _ in range(4):
        words = [rng.randrange(3, vocab) for _ in range(rng.randrange(2, 7))]
        docs = []
        for _ in range(per_subject):
            context = opening + words + [rng.randrange(3, vocab) for _ in range(rng.randrange(3, 25))]
            choices = [
                [rng.randrange(3, vocab) for _ in range(rng.choice((1, 1, 3)))] for _ in range(rng.randrange(1, 5))
            ]
            docs.append([EncodedRequest(tuple((context + c)[:-1]), tuple(c)) for c in choices])
        subjects.append(docs)
    return subjects


def planned(subjects: list[list[list[EncodedRequest]]], forward_cost: int = 0) -> RowGroup:
    groups, offset = [], 0
    for docs in subjects:
        rows = [pack(requests) for requests in docs]
        offsets = list(offset + np.cumsum([0] + [len(r) for r in docs[:-1]]))
        offset += sum(len(r) for r in docs)
        groups.append(RowGroup((), rows, offsets))
    (pool,) = plan_prefixes(groups, min_group_prefix=1000, forward_cost=forward_cost)
    return pool


def batches_of(pool: RowGroup) -> list[Batch]:
    return make_batches(pool.rows, pool.offsets, 96, 64, pool.prefix, 4, pool.tails, pool.tail_of)


def test_tails_are_planned_only_where_they_pay():
    vocab = 97
    pool = planned(subject_documents(1, vocab, per_subject=3))
    assert len(pool.prefix) >= 10 and len(pool.tails) == 4 and all(2 <= len(t) <= 6 for t in pool.tails)
    whole = planned(subject_documents(1, vocab, per_subject=3), forward_cost=10**6)  # nothing pays
    assert not whole.prefix and not whole.tails and whole.tail_of == []
    for row, tail, full_row in zip(pool.rows, pool.tail_of, whole.rows):
        # A row continues the pool prefix, then its tail; positions stay absolute.
        assert pool.prefix + pool.tails[tail] + row.tokens == full_row.tokens
        assert row.positions == full_row.positions[len(pool.prefix) + len(pool.tails[tail]) :]
    saved = (len(pool.rows) - 1) * len(pool.prefix) + 2 * sum(len(t) for t in pool.tails)
    assert pool.num_tokens == whole.num_tokens - saved
    # Two rows per subject save only the tails' own tokens: not worth their passes.
    assert not planned(subject_documents(1, vocab, per_subject=2)).tails
    # Without a pool prefix, no tails: a short opening every row shares (ARC's "Question:") stays in the rows.
    short = [
        [[replace(r, inputs=r.inputs[8:]) for r in doc] for doc in docs] for docs in subject_documents(1, vocab, 3)
    ]
    unprefixed = planned(short)
    assert not unprefixed.prefix and not unprefixed.tails


def test_a_row_sees_its_own_tail_only():
    pool = planned(subject_documents(2, 97, per_subject=3))
    batches = batches_of(pool)
    assert any(len(set(b.tail_of.tolist())) > 1 for b in batches)  # batches mix subjects
    for batch in batches:
        mask = batch.attention_mask(torch.float32, gap=key_gap(batch))
        assert (batch.lent_length + key_gap(batch) + batch.input_ids.shape[1]) % KEY_ALIGN == 0
        tail_columns = mask[:, 0, :, batch.prefix_length : batch.lent_length] == 0  # [B, T, W]
        lengths = torch.tensor([len(pool.tails[t]) for t in batch.tail_of.tolist()])
        expected = torch.arange(batch.tail_width)[None] < lengths[:, None]
        real = batch.branch >= 0
        assert torch.equal(tail_columns[real], expected[:, None].expand_as(tail_columns)[real])
        assert batch.tail_width == int(lengths.max())
        assert (mask[:, 0, :, : batch.prefix_length] == 0).all()


@pytest.mark.parametrize("architecture", ["llama", "mistral", "qwen2"])
@pytest.mark.parametrize("path", ["scored pass", "transformers decoder"])
def test_scores_equal_separate_forward_passes(architecture, path, monkeypatch):
    window = None if architecture == "llama" else WINDOW
    model, _ = load_model("tiny_llama", architecture=architecture, sliding_window=window, seed=6)
    if path != "scored pass":
        monkeypatch.setattr(loglikelihood, "supports_scored_pass", lambda model: False)
    subjects = subject_documents(3, model.config.vocab_size, per_subject=3)
    requests = [r for docs in subjects for doc in docs for r in doc]
    pool = planned(subjects)
    batches = batches_of(pool)
    assert pool.tails and batches[0].tails is not None and len(batches) > 2
    assert_scores_equal_separate_passes(model, batches, requests)


def test_tails_run_in_batches_of_their_own_under_the_budget():
    pool = planned(subject_documents(4, 97, per_subject=3))
    tails = batches_of(pool)[0].tails
    assert tails is not None
    chosen = Tails.of(pool.tails, tails.prefix, batch_tokens=8, forward_cost=0).runs
    assert sorted(g for group, _ in chosen for g in group) == list(range(len(pool.tails)))
    for group, batch in chosen:
        assert batch.input_ids.shape[0] == len(group) and torch.equal(batch.prefix, tails.prefix)
        for row, g in zip(batch.input_ids, group):
            assert row[: len(pool.tails[g])].tolist() == list(pool.tails[g])
        assert batch.position_ids[0, 0] == len(pool.prefix)
