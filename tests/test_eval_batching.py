"""Batch cutting and masks: `cheapest_cuts` finds the cheapest batching (against every partition of a few rows),
`make_batches` keeps each row once within the budgets, and closed keys after the prefix change nothing else."""

from __future__ import annotations

import itertools
import random

import torch

from nas.evaluation.batching import cheapest_cuts, make_batches
from nas.evaluation.packing import pack
from nas.evaluation.requests import EncodedRequest


def batching_cost(lengths: list[int], cuts: list[int], forward_cost: int) -> int:
    return sum((end - start) * lengths[start] + forward_cost for start, end in zip(cuts, cuts[1:]))


def allowed(lengths: list[int], cuts: list[int], batch_tokens: int, max_batch_size: int) -> bool:
    return all(
        end - start <= max_batch_size and (end - start == 1 or (end - start) * lengths[start] <= batch_tokens)
        for start, end in zip(cuts, cuts[1:])
    )


def every_batching(count: int):
    for inner in itertools.product((False, True), repeat=count - 1):
        yield [0] + [i + 1 for i, cut in enumerate(inner) if cut] + [count]


def test_cheapest_cuts_is_the_cheapest_allowed_batching():
    rng = random.Random(0)
    for _ in range(300):
        count = rng.randrange(1, 9)
        lengths = sorted((rng.randrange(1, 60) for _ in range(count)), reverse=True)
        batch_tokens, max_batch_size, forward_cost = rng.randrange(1, 200), rng.randrange(1, 6), rng.randrange(0, 40)
        cuts = cheapest_cuts(lengths, batch_tokens, max_batch_size, forward_cost)
        assert cuts[0] == 0 and cuts[-1] == count and cuts == sorted(set(cuts))
        assert allowed(lengths, cuts, batch_tokens, max_batch_size)
        best = min(
            batching_cost(lengths, c, forward_cost)
            for c in every_batching(count)
            if allowed(lengths, c, batch_tokens, max_batch_size)
        )
        assert batching_cost(lengths, cuts, forward_cost) == best


def test_forward_cost_trades_padding_for_fewer_batches():
    lengths = [40, 33, 17]
    assert cheapest_cuts(lengths, 1000, 64, forward_cost=0) == [0, 1, 2, 3]  # no padding at all
    assert cheapest_cuts(lengths, 1000, 64, forward_cost=1000) == [0, 3]  # one batch
    assert len(cheapest_cuts([5] * 10, 1000, 4, forward_cost=1000)) - 1 == 3  # as few as 4 rows a batch allow


def test_make_batches_keeps_every_row_once_within_budget():
    rng = random.Random(1)
    rows = [pack([EncodedRequest(tuple(rng.randrange(3, 99) for _ in range(n)), (7,))]) for n in range(3, 60, 2)]
    offsets = list(range(len(rows)))
    batches = make_batches(rows, offsets, batch_tokens=128, max_batch_size=5, forward_cost=16)
    requests = sorted(int(r) for b in batches for r in b.request_ids)
    assert requests == offsets
    for batch in batches:
        count, width = batch.input_ids.shape
        assert count <= 5 and (count == 1 or count * width <= 128)


def test_closed_keys_after_the_prefix_leave_the_rest_of_the_mask():
    rows = [
        pack([EncodedRequest((5, 6, 7, 8), (9,)), EncodedRequest((5, 6, 7, 8), (10, 11))]),
        pack([EncodedRequest((3, 4), (5,))]),
    ]
    (batch,) = make_batches(rows, [0, 2], batch_tokens=100, forward_cost=100, prefix=(1, 2, 3))
    plain, gapped = batch.attention_mask(torch.float32), batch.attention_mask(torch.float32, gap=5)
    prefix = batch.prefix_length
    assert gapped.shape[-1] == plain.shape[-1] + 5
    assert torch.equal(gapped[..., :prefix], plain[..., :prefix])
    assert bool((gapped[..., prefix : prefix + 5] == torch.finfo(torch.float32).min).all())
    assert torch.equal(gapped[..., prefix + 5 :], plain[..., prefix:])
