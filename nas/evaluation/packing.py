"""Prefix-shared packing: one row per document, its context read once, then every choice after it.

The requests of one document (one per choice) usually share a long token prefix (the context). A row
holds that prefix once, then each request's remaining tokens as a branch; a 4-D attention mask lets a
branch token see the shared prefix and the earlier tokens of its own branch only, and position ids
restart after the prefix in every branch. Each request's log-likelihood is then exactly the one a
separate causal forward pass of `context + continuation` would give (up to float rounding), at the
cost of the context once instead of once per choice. For one-token continuations (MMLU's " A".." D")
all requests are the prefix itself and the row is just the context.

Across documents, a prefix common to a whole group (TruthfulQA's six-question primer, MMLU's subject
description and five solved examples) or to all rows (the opening words of MMLU's subject headers) is
cut off the rows by `split_group_prefix` where that pays (`built_task.plan_prefixes`); `batching.py`
runs it once per evaluation and lends its KV cache to every row of the group.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from nas.evaluation.requests import EncodedRequest


@dataclass(frozen=True)
class PackedRow:
    """One document's requests laid out in one sequence.

    Attributes:
        tokens, positions: the row's input ids and position ids.
        branch: 0 for the shared prefix, i + 1 for tokens of request i's branch.
        score_index: packed index of every scored position, request after request.
        score_target: the token each scored position must predict.
        score_request: the request (index into the document's requests) of each scored position.
    """

    tokens: tuple[int, ...]
    positions: tuple[int, ...]
    branch: tuple[int, ...]
    score_index: tuple[int, ...]
    score_target: tuple[int, ...]
    score_request: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.tokens)


def _common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    first = seqs[0]
    n = min(len(s) for s in seqs)
    for i in range(n):
        t = first[i]
        if any(s[i] != t for s in seqs):
            return i
    return n


def pack(requests: Sequence[EncodedRequest], share: bool = True) -> PackedRow:
    """Lay out one document's requests; `share=False` gives every request its own branch (no sharing)."""
    inputs = [r.inputs for r in requests]
    shared = _common_prefix(inputs) if share else 0
    tokens = list(inputs[0][:shared])
    positions = list(range(shared))
    branch = [0] * shared
    score_index: list[int] = []
    score_target: list[int] = []
    score_request: list[int] = []
    for i, request in enumerate(requests):
        start = len(tokens)
        rest = request.inputs[shared:]
        tokens.extend(rest)
        positions.extend(range(shared, shared + len(rest)))
        branch.extend([i + 1] * len(rest))
        for j, target in zip(range(request.first_scored, len(request.inputs)), request.targets):
            score_index.append(j if j < shared else start + j - shared)
            score_target.append(target)
            score_request.append(i)
    return PackedRow(
        tuple(tokens), tuple(positions), tuple(branch), tuple(score_index), tuple(score_target), tuple(score_request)
    )


def leading_shared(row: PackedRow) -> int:
    """Length of the row's shared (branch 0) prefix."""
    return next((i for i, b in enumerate(row.branch) if b != 0), len(row.branch))


def split_group_prefix(rows: Sequence[PackedRow], min_length: int = 32) -> tuple[tuple[int, ...], list[PackedRow]]:
    """The token prefix all `rows` share (if at least `min_length` long) and the rows without it.

    The prefix stops before any row's branches and before its first scored position, so every row
    keeps at least one token and every score is read from the row itself. Position ids stay absolute.
    """
    if len(rows) < 2:
        return (), list(rows)
    limit = min(min(leading_shared(r), min(r.score_index)) for r in rows)
    length = min(_common_prefix([r.tokens[:limit] for r in rows]), limit)
    if length < min_length:
        return (), list(rows)
    stripped = [
        PackedRow(
            r.tokens[length:],
            r.positions[length:],
            r.branch[length:],
            tuple(i - length for i in r.score_index),
            r.score_target,
            r.score_request,
        )
        for r in rows
    ]
    return rows[0].tokens[:length], stripped
