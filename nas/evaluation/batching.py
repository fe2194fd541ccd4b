"""Packed rows to padded tensors: length-sorted batches cut where they cost least under a token budget, and their
attention masks.

A batch may carry a `prefix`: tokens every one of its rows continues (see `packing.split_group_prefix`).
The prefix is run once and its KV cache is lent to all rows, whose mask then opens every prefix column.
After the prefix, a row may continue one of the batches' `Tails`: tokens its group's rows share (an MMLU subject's
" abstract algebra.\n\n" after the pooled header opening), also run once per evaluation; a row's mask opens its own
tail's columns only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from nas.evaluation.packing import PackedRow

# What one more forward pass costs, in tokens of a batch: it decides where batches are cut and which prefixes run
# once (`built_task`'s module docstring has the CPU measurement). CUDA's is a guess (a small forward pass there is
# mostly kernel launches), not measured.
CPU_FORWARD_COST = 16
CUDA_FORWARD_COST = 1024


@dataclass(frozen=True, eq=False)
class Tails:
    """Second-level prefixes: per group, the tokens its rows share after the batch prefix, right-padded.

    Attributes:
        tokens: [G, L] each group's tail, padded with zeros.
        lengths: [G] each tail's length (at least 1).
        prefix: [P] the batch prefix the tails continue, or None.
        runs: the tails as rows of their own after the prefix, in batches cut like the rows' (cut once, with the
            rows' budget and forward cost): (which tails, batch).
    """

    tokens: torch.Tensor
    lengths: torch.Tensor
    prefix: torch.Tensor | None
    runs: tuple[tuple[list[int], Batch], ...]

    @classmethod
    def of(
        cls, tails: Sequence[Sequence[int]], prefix: torch.Tensor | None, batch_tokens: int, forward_cost: int
    ) -> Tails:
        tokens = torch.zeros(len(tails), max(len(t) for t in tails), dtype=torch.long)
        for g, tail in enumerate(tails):
            tokens[g, : len(tail)] = torch.tensor(list(tail))
        start = 0 if prefix is None else int(prefix.numel())
        rows = [PackedRow(tuple(t), tuple(range(start, start + len(t))), (0,) * len(t), (), (), ()) for t in tails]
        order = sorted(range(len(rows)), key=lambda g: -len(rows[g]))
        cuts = cheapest_cuts([len(rows[g]) for g in order], batch_tokens, len(rows), forward_cost)
        chosen = [order[a:b] for a, b in zip(cuts, cuts[1:])]
        runs = tuple((group, _collate([rows[g] for g in group], [0] * len(group), prefix)) for group in chosen)
        return cls(tokens, torch.tensor([len(t) for t in tails]), prefix, runs)


@dataclass
class Batch:
    """Padded tensors of several rows plus where to read their scores.

    Attributes:
        input_ids, position_ids: [B, T]; position ids continue after the prefix, if any.
        branch: [B, T]; 0 shared, i + 1 request i's branch, -1 padding.
        score_target: [N] the token each scored position must predict.
        request_ids: [N] the global request number of each scored position.
        hidden_index: [U] the distinct scored positions, as indices into the flattened [B * T] positions: choices
            scored at one position (MMLU's " A".." D" after one context) read one hidden state and one head row.
        score_hidden: [N] which of those each scored position is.
        prefix: [P] tokens shared by all rows and run once, or None.
        tails: the tails some rows continue after the prefix, or None.
        tail_of: [B] each row's tail (index into `tails`), -1 for none; None without tails.
        tail_width: the longest tail of the batch's rows: the tail columns of its keys.
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    branch: torch.Tensor
    score_target: torch.Tensor
    request_ids: torch.Tensor
    hidden_index: torch.Tensor
    score_hidden: torch.Tensor
    prefix: torch.Tensor | None = None
    tails: Tails | None = None
    tail_of: torch.Tensor | None = None
    tail_width: int = 0

    @property
    def num_tokens(self) -> int:
        """Tokens the model reads for this batch (padding excluded, prefix and tails not counted)."""
        return int((self.branch >= 0).sum())

    @property
    def prefix_length(self) -> int:
        return 0 if self.prefix is None else int(self.prefix.numel())

    @property
    def lent_length(self) -> int:
        """Keys lent to the rows before their own: the prefix's, then `tail_width` tail columns."""
        return self.prefix_length + self.tail_width

    def row_tail_lengths(self) -> torch.Tensor:
        """[B] the length of each row's tail (0 for none)."""
        if self.tails is None or self.tail_of is None:
            return torch.zeros(self.input_ids.shape[0], dtype=torch.long, device=self.input_ids.device)
        lengths = self.tails.lengths.to(self.tail_of.device)[self.tail_of.clamp(min=0)]
        return lengths.masked_fill(self.tail_of < 0, 0)

    def to(self, device: torch.device | str) -> Batch:
        """The batch with its tensors on `device` (the tails stay where they are: they key their KV cache)."""
        return replace(
            self,
            input_ids=self.input_ids.to(device),
            position_ids=self.position_ids.to(device),
            branch=self.branch.to(device),
            score_target=self.score_target.to(device),
            request_ids=self.request_ids.to(device),
            hidden_index=self.hidden_index.to(device),
            score_hidden=self.score_hidden.to(device),
            prefix=None if self.prefix is None else self.prefix.to(device),
            tail_of=None if self.tail_of is None else self.tail_of.to(device),
        )

    def window_matters(self, window: int | None) -> bool:
        """Whether a sliding attention window of `window` tokens (None: none) closes any key here: some query
        `window` or more positions after a key (keys start at position 0, the prefix's or the row's)."""
        return window is not None and int(self.position_ids.max()) >= window

    def attention_mask(self, dtype: torch.dtype, gap: int = 0, window: int | None = None) -> torch.Tensor:
        """Additive [B, 1, T, P + W + gap + T] mask: the prefix is open to all; of the W tail columns, a row's own
        tail's; `gap` keys after them closed to all; then causal, a branch sees the shared part and itself, and
        padding sees only itself (no empty softmax row, no NaN). With a sliding `window` (Mistral's, Qwen2's
        sliding layers), a query also sees only keys fewer than `window` positions before it, as in a separate
        forward pass of its own request."""
        branch = self.branch
        count, size = branch.shape
        device = branch.device
        index = torch.arange(size, device=device)
        causal = index[None, :] <= index[:, None]  # [q, k]
        key, query = branch[:, None, :], branch[:, :, None]
        allowed = causal[None] & ((key == 0) | (key == query)) & (key >= 0)
        closed = torch.finfo(dtype).min
        lent = self.lent_length
        mask = torch.zeros(count, 1, size, lent + gap + size, dtype=dtype, device=device)
        if self.tail_width:
            foreign = torch.arange(self.tail_width, device=device)[None] >= self.row_tail_lengths()[:, None]  # [B, W]
            mask[:, 0, :, self.prefix_length : lent].masked_fill_(foreign[:, None], closed)
        if window is not None and self.window_matters(window):
            query_position = self.position_ids[:, :, None]
            allowed &= query_position - self.position_ids[:, None, :] < window
            lent_position = torch.arange(lent, device=device)  # the prefix's, then the tails' (after it)
            mask[:, 0, :, :lent].masked_fill_(query_position - lent_position >= window, closed)
        allowed |= torch.eye(size, dtype=torch.bool, device=device)[None] & (query < 0)
        mask[:, 0, :, lent : lent + gap] = closed
        mask[:, 0, :, lent + gap :].masked_fill_(~allowed, closed)
        return mask


def make_batches(
    rows: Sequence[PackedRow],
    request_offsets: Sequence[int],
    batch_tokens: int,
    max_batch_size: int = 64,
    prefix: Sequence[int] = (),
    forward_cost: int = CPU_FORWARD_COST,
    tails: Sequence[Sequence[int]] = (),
    tail_of: Sequence[int] = (),
) -> list[Batch]:
    """Sort rows longest first and cut them into the batches that cost least: padded tokens plus `forward_cost`
    per batch, each batch at most `batch_tokens` padded tokens and `max_batch_size` rows.

    Args:
        rows: one per document.
        request_offsets: global number of each row's first request.
        batch_tokens: budget of batch size x longest row; a longer row still gets a batch of its own.
        max_batch_size: cap on rows per batch.
        prefix: tokens all `rows` continue (already cut off them), run once per evaluation.
        forward_cost: what one more forward pass costs, in tokens of a batch.
        tails: tokens groups of rows continue after the prefix (already cut off them), each run once per evaluation.
        tail_of: per row, the tail it continues (index into `tails`), -1 for none; empty: no tails.
    """
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    prefix_tensor = torch.tensor(list(prefix), dtype=torch.long) if prefix else None
    shared_tails = Tails.of(tails, prefix_tensor, batch_tokens, forward_cost) if tails else None
    cuts = cheapest_cuts([len(rows[i]) for i in order], batch_tokens, max_batch_size, forward_cost)
    groups = [order[start:end] for start, end in zip(cuts, cuts[1:])]
    batches = []
    for group in groups:
        batch = _collate([rows[j] for j in group], [request_offsets[j] for j in group], prefix_tensor)
        if shared_tails is not None:
            batch.tails, batch.tail_of = shared_tails, torch.tensor([tail_of[j] for j in group], dtype=torch.long)
            batch.tail_width = int(batch.row_tail_lengths().max())
        batches.append(batch)
    return batches


def cheapest_cuts(lengths: Sequence[int], batch_tokens: int, max_batch_size: int, forward_cost: int) -> list[int]:
    """Batch boundaries [0, ..., n] over rows sorted longest first that minimise padded tokens + `forward_cost` per
    batch, each batch within `batch_tokens` (or a single row) and `max_batch_size`.

    The rows are sorted, so a batch's longest row is its first and the best cut is a shortest path over boundaries
    (exact, O(n x max_batch_size)). Cutting greedily instead (fill each batch, then start the next) padded MMLU's
    rows 3.1% (two questions per subject) and ARC-Easy's 6.7%; these cuts pad them 1.5% and 2.4%.
    """
    count = len(lengths)
    cost = [0] * (count + 1)  # cost[i]: cheapest batching of the first i rows
    back = [0] * (count + 1)  # back[i]: where the last batch of that batching starts
    for end in range(1, count + 1):
        # A row alone is always allowed; then batches ending here that start at longer and longer rows.
        cost[end], back[end] = cost[end - 1] + lengths[end - 1] + forward_cost, end - 1
        for start in range(end - 2, max(end - max_batch_size, 0) - 1, -1):
            padded = (end - start) * lengths[start]
            if padded > batch_tokens:
                break  # batches starting earlier are longer and start at longer rows: all over the budget
            candidate = cost[start] + padded + forward_cost
            if candidate < cost[end]:
                cost[end], back[end] = candidate, start
    cuts = [count]
    while cuts[-1] > 0:
        cuts.append(back[cuts[-1]])
    return cuts[::-1]


def _collate(rows: Sequence[PackedRow], offsets: Sequence[int], prefix: torch.Tensor | None) -> Batch:
    size = max(len(r) for r in rows)
    count = len(rows)
    input_ids = torch.zeros(count, size, dtype=torch.long)
    position_ids = torch.zeros(count, size, dtype=torch.long)
    branch = torch.full((count, size), -1, dtype=torch.long)
    score_target: list[int] = []
    request_ids: list[int] = []
    distinct: dict[int, int] = {}  # flat position b * size + column -> its number among the distinct scored ones
    score_hidden: list[int] = []
    for b, (row, offset) in enumerate(zip(rows, offsets)):
        n = len(row)
        input_ids[b, :n] = torch.tensor(row.tokens)
        position_ids[b, :n] = torch.tensor(row.positions)
        branch[b, :n] = torch.tensor(row.branch)
        score_hidden.extend(distinct.setdefault(b * size + column, len(distinct)) for column in row.score_index)
        score_target.extend(row.score_target)
        request_ids.extend(offset + r for r in row.score_request)

    def as_long(values: list[int]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long)

    return Batch(
        input_ids,
        position_ids,
        branch,
        as_long(score_target),
        as_long(request_ids),
        as_long(list(distinct)),
        as_long(score_hidden),
        prefix,
    )
