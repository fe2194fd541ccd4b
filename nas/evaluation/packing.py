"""Prefix-shared packing: one row per document, its context read once, then every choice after it.

The requests of one document (one per choice) usually share a long token prefix (the context). A row
holds that prefix once, then each request's remaining tokens as a branch; a 4-D attention mask lets a
branch token see the shared prefix and the earlier tokens of its own branch only, and position ids
restart after the prefix in every branch. Each request's log-likelihood is then exactly the one a
separate causal forward pass of `context + continuation` would give (up to float rounding), at the
cost of the context once instead of once per choice. For one-token continuations (MMLU's " A".." D")
all requests are the prefix itself and the row is just the context.

Rows are sorted by length and cut into batches under a token budget, all once per process; the masks
are built per forward from small per-token branch ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from nas.evaluation.encoding import EncodedRequest


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


@dataclass
class Batch:
    """Padded tensors of several rows plus where to read their scores.

    `request_ids` maps each scored position to a global request number (`Batch.num_requests` long
    output per task is assembled by the caller).
    """

    input_ids: torch.Tensor  # [B, T]
    position_ids: torch.Tensor  # [B, T]
    branch: torch.Tensor  # [B, T]; -1 marks padding
    score_row: torch.Tensor  # [N]
    score_col: torch.Tensor  # [N]
    score_target: torch.Tensor  # [N]
    request_ids: torch.Tensor  # [N]

    @property
    def num_tokens(self) -> int:
        return int((self.branch >= 0).sum())

    def to(self, device: torch.device | str) -> Batch:
        return Batch(*(t.to(device) for t in vars(self).values()))

    def attention_mask(self, dtype: torch.dtype) -> torch.Tensor:
        """Additive [B, 1, T, T] mask: causal, a branch sees the prefix and itself, padding sees only itself."""
        branch = self.branch
        size = branch.shape[1]
        index = torch.arange(size, device=branch.device)
        causal = index[None, :] <= index[:, None]  # [q, k]
        key, query = branch[:, None, :], branch[:, :, None]
        allowed = causal[None] & ((key == 0) | (key == query)) & (key >= 0)
        # Padding rows attend to themselves only, so no row of the softmax is empty (no NaN).
        allowed |= torch.eye(size, dtype=torch.bool, device=branch.device)[None] & (query < 0)
        mask = torch.zeros(allowed.shape, dtype=dtype, device=branch.device)
        mask.masked_fill_(~allowed, torch.finfo(dtype).min)
        return mask[:, None]


def make_batches(
    rows: Sequence[PackedRow], request_offsets: Sequence[int], batch_tokens: int, max_batch_size: int = 64
) -> list[Batch]:
    """Sort rows longest first and cut them into batches of at most `batch_tokens` padded tokens.

    Args:
        rows: one per document.
        request_offsets: global number of each row's first request.
        batch_tokens: budget of batch size x longest row; a longer row still gets a batch of its own.
        max_batch_size: cap on rows per batch.
    """
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    batches: list[Batch] = []
    current: list[int] = []
    for i in order:
        longest = len(rows[current[0]]) if current else len(rows[i])
        if current and ((len(current) + 1) * longest > batch_tokens or len(current) >= max_batch_size):
            batches.append(_collate([rows[j] for j in current], [request_offsets[j] for j in current]))
            current = []
        current.append(i)
    if current:
        batches.append(_collate([rows[j] for j in current], [request_offsets[j] for j in current]))
    return batches


def _collate(rows: Sequence[PackedRow], offsets: Sequence[int]) -> Batch:
    size = max(len(r) for r in rows)
    count = len(rows)
    input_ids = torch.zeros(count, size, dtype=torch.long)
    position_ids = torch.zeros(count, size, dtype=torch.long)
    branch = torch.full((count, size), -1, dtype=torch.long)
    score_row, score_col, score_target, request_ids = [], [], [], []
    for b, (row, offset) in enumerate(zip(rows, offsets)):
        n = len(row)
        input_ids[b, :n] = torch.tensor(row.tokens)
        position_ids[b, :n] = torch.tensor(row.positions)
        branch[b, :n] = torch.tensor(row.branch)
        score_row.extend([b] * len(row.score_index))
        score_col.extend(row.score_index)
        score_target.extend(row.score_target)
        request_ids.extend(offset + r for r in row.score_request)
    as_long = lambda xs: torch.tensor(xs, dtype=torch.long)  # noqa: E731
    return Batch(
        input_ids,
        position_ids,
        branch,
        as_long(score_row),
        as_long(score_col),
        as_long(score_target),
        as_long(request_ids),
    )
