"""Runs packed batches through the live model and sums each request's continuation log-likelihood.

Only the scored positions go through the LM head (the decoder's hidden states are gathered first), so
the head's cost, a fifth of a small model's FLOPs, is paid for a few positions per request instead of
every input token; and those positions are gathered over batches and put through the head together
(`HEAD_ROWS` at a time): a batch of MMLU questions scores one position per question, and the head's
product for 4-12 rows ran at a seventh of the speed of one for a few hundred, its weight read every time. Log-softmax runs in float32 over the full vocabulary, as lm-eval's HFLM does for
fp32 models; "greedy" is lm-eval's `is_greedy`: every target token is the argmax at its position.
A batch's shared prefix runs once per evaluation; its KV cache is expanded over the batch's rows. So do the
group tails after it (MMLU's subjects, `built_task._with_tails`): run once as rows of their own, each row is lent its
own tail's keys and values after the prefix's. The decoder pass
of Llama-family models is `scored_pass.scored_hidden_chunk` (its last layer only at the scored positions), layer by
layer over chunks of batches of up to `CHUNK_BYTES` (so each layer's weights are packed once for all of them on CPU);
other models run transformers' decoder batch by batch and the hidden states are gathered from its output.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from nas.errors import NASError
from nas.evaluation.attention_windows import decoder_mask
from nas.evaluation.batching import Batch, Tails
from nas.evaluation.hf_compat import cache_kwargs, cache_of
from nas.evaluation.scored_pass import KV, chunk_bytes, expand_prefix, scored_hidden_chunk, supports_scored_pass


@dataclass
class ForwardTimer:
    """Seconds spent inside the model's forward passes (CUDA synchronised) and in the whole loop."""

    forward_s: float = 0.0
    total_s: float = 0.0
    tokens: int = 0
    forwards: int = 0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _separable_head(model: Any) -> bool:
    # Models that post-process logits (soft-capping, scaling) need the full forward.
    config = getattr(model, "config", None)
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None):
        return False
    return hasattr(model, "get_decoder") and model.get_output_embeddings() is not None


def _plain_cache(kv: Sequence[tuple[torch.Tensor, torch.Tensor]] | None, rows: int) -> Any:
    """A KV cache holding `kv` expanded over `rows` rows (empty without), that keeps every key it is given: the
    model's own cache would keep only a sliding layer's last window, but the rows' masks place lent keys by position
    (and close those out of a window themselves)."""
    from transformers import DynamicCache

    return DynamicCache() if kv is None else DynamicCache(ddp_cache_data=expand_prefix(kv, rows))


def _prefix_kv(model: Any, prefix: torch.Tensor) -> KV:
    """Per-layer keys and values of the shared prefix, [1, kv_heads, P, head_dim] each."""
    positions = torch.arange(prefix.numel(), device=prefix.device)[None]
    decoder = model.get_decoder()
    cache = cache_kwargs(decoder, _plain_cache(None, 1))
    out = decoder(input_ids=prefix[None], position_ids=positions, use_cache=True, **cache)
    # With dropped layers only the first (executed) cache layers are filled.
    return [(layer.keys, layer.values) for layer in cache_of(out).layers if layer.is_initialized]


def _tails_kv(model: Any, tails: Tails, prefix_kv: KV | None) -> KV:
    """Per-layer keys and values of every tail after the prefix, [G, KH, L, d] (columns past a tail's length stay
    zeros, never opened): the tails run once, as rows of batches of their own (`Tails.runs`)."""
    decoder = model.get_decoder()
    param = next(model.parameters())
    table: KV = []
    for chosen, stored in tails.runs:
        batch = stored.to(param.device)
        mask = decoder_mask(decoder.config, batch, param.dtype)
        lent = cache_kwargs(decoder, _plain_cache(prefix_kv, len(chosen)))
        out = decoder(**_decoder_inputs(batch, mask), use_cache=True, **lent)
        filled = [layer for layer in cache_of(out).layers if layer.is_initialized]
        if not table:  # per layer: a sub-network's layers may keep different numbers of heads
            count, width = tails.tokens.shape
            shapes = [(count, layer.keys.shape[1], width, layer.keys.shape[3]) for layer in filled]
            table = [
                (layer.keys.new_zeros(shape), layer.values.new_zeros(shape)) for layer, shape in zip(filled, shapes)
            ]
        rows, width = torch.tensor(chosen, device=param.device), batch.input_ids.shape[1]
        for (keys, values), layer in zip(table, filled):
            keys[rows, :, :width] = layer.keys[:, :, batch.prefix_length :]
            values[rows, :, :width] = layer.values[:, :, batch.prefix_length :]
    return table


class _TailLent(Sequence[tuple[torch.Tensor, torch.Tensor]]):
    """The keys and values lent to a batch's rows where some continue a tail, per layer, built when that layer runs
    (a chunk of batches would otherwise hold every layer's at once): the prefix's, then each row's tail's (its
    batch's `tail_width` columns), [B, KH, P + W, d]."""

    def __init__(self, prefix_kv: KV | None, tails_kv: KV, tail_of: torch.Tensor, width: int) -> None:
        self.prefix_kv, self.tails_kv = prefix_kv, tails_kv
        self.rows, self.width = tail_of.clamp(min=0), width

    def __len__(self) -> int:
        return len(self.tails_kv)

    def __getitem__(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        keys, values = self.tails_kv[layer]
        k, v = keys[self.rows, :, : self.width], values[self.rows, :, : self.width]
        if self.prefix_kv is None:
            return k, v
        rows = len(self.rows)
        k, v = (torch.cat([p.expand(rows, -1, -1, -1), t], dim=2) for p, t in zip(self.prefix_kv[layer], (k, v)))
        return k, v


def _lent_kv(
    prefix_kv: KV | None, tails_kv: KV | None, batch: Batch
) -> Sequence[tuple[torch.Tensor, torch.Tensor]] | None:
    """The keys and values lent to a batch's rows, per layer: the prefix's and each row's tail's
    (`_TailLent`); the prefix's alone ([1, KH, P, d]) where no row has a tail."""
    if tails_kv is None or batch.tail_of is None or not batch.tail_width:
        return prefix_kv
    return _TailLent(prefix_kv, tails_kv, batch.tail_of, batch.tail_width)


def _lent(model: Any, kv: Sequence[tuple[torch.Tensor, torch.Tensor]] | None, batch: Batch) -> dict[str, Any]:
    """The lent KV cache expanded over the batch's rows, as the decoder's cache argument ({} without one)."""
    if kv is None:
        return {}
    return cache_kwargs(model.get_decoder(), _plain_cache(kv, batch.input_ids.shape[0]))


# What a chunk of batches run layer by layer together may hold between layers (`scored_pass.chunk_bytes`): MMLU
# 0-shot at two questions a subject is one chunk on SmolLM2-135M (about 30 MiB).
CHUNK_BYTES = 256 * 2**20

# Scored positions put through the head at once: enough rows for an efficient product, logits of a bounded size
# (256 x a 128k vocabulary in float32: 128 MiB).
HEAD_ROWS = 256


def _decoder_inputs(batch: Batch, mask: torch.Tensor | dict[str, torch.Tensor]) -> dict[str, Any]:
    return {"input_ids": batch.input_ids, "attention_mask": mask, "position_ids": batch.position_ids}


class _Scores:
    """Each request's summed log-likelihood and count of non-greedy positions, from its scored positions' logits."""

    def __init__(self, num_requests: int, device: torch.device) -> None:
        self.lls = torch.zeros(num_requests, dtype=torch.float64, device=device)
        self.misses = torch.zeros(num_requests, dtype=torch.long, device=device)

    def add(self, logits: torch.Tensor, rows: torch.Tensor, target: torch.Tensor, request_ids: torch.Tensor) -> None:
        """Scored positions: `rows` (which row of `logits` each reads), `target` and `request_ids`."""
        logprobs = F.log_softmax(logits.float(), dim=-1)
        self.lls.index_add_(0, request_ids, logprobs[rows, target].double())
        self.misses.index_add_(0, request_ids, (logprobs.argmax(dim=-1)[rows] != target).long())


class _PendingHead:
    """Distinct scored positions' hidden states gathered over batches, put through the head `HEAD_ROWS` rows at a
    time."""

    def __init__(self, head: torch.nn.Module, scores: _Scores) -> None:
        self.head, self.scores = head, scores
        self.hidden: list[torch.Tensor] = []
        self.scored: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # rows, targets, requests
        self.rows = 0

    def add(self, hidden: torch.Tensor, batch: Batch) -> None:
        """`hidden`: the batch's distinct scored positions' hidden states (`batch.hidden_index`)."""
        self.hidden.append(hidden)
        self.scored.append((batch.score_hidden + self.rows, batch.score_target, batch.request_ids))
        self.rows += len(hidden)

    def full(self) -> bool:
        return self.rows >= HEAD_ROWS

    def flush(self) -> None:
        if not self.rows:
            return
        rows, target, request_ids = (torch.cat(parts) for parts in zip(*self.scored))
        self.scores.add(self.head(torch.cat(self.hidden)), rows, target, request_ids)
        self.hidden, self.scored, self.rows = [], [], 0


def _scored_hidden(model: Any, batch: Batch, mask: Any, lent: dict[str, Any]) -> torch.Tensor:
    """The decoder's hidden states at the batch's distinct scored positions."""
    out = model.get_decoder()(**_decoder_inputs(batch, mask), use_cache=False, **lent).last_hidden_state
    return out.flatten(0, 1)[batch.hidden_index]


def _score_full_forward(model: Any, batch: Batch, mask: Any, lent: dict[str, Any], scores: _Scores) -> None:
    """A model whose head cannot be run apart (it post-processes its logits): the whole forward, then the scores."""
    if lent:
        lent = cache_kwargs(model, next(iter(lent.values())))
    logits = model(**_decoder_inputs(batch, mask), use_cache=False, **lent).logits
    scores.add(logits.flatten(0, 1)[batch.hidden_index], batch.score_hidden, batch.score_target, batch.request_ids)


@torch.inference_mode()
def score_batches(
    model: torch.nn.Module,
    batches: Sequence[Batch],
    num_requests: int,
    progress: bool = True,
    desc: str = "loglikelihood",
    timer: ForwardTimer | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(log-likelihood, is_greedy) of every request, indexed by the batches' `request_ids`."""
    attention = str(getattr(getattr(model, "config", None), "_attn_implementation", "") or "")
    if "flash" in attention:
        raise NASError(
            f"The model uses attn_implementation={attention!r}, which takes no 4-D attention mask; the "
            "prefix-shared evaluation needs one. Load the model with attn_implementation='sdpa' (or 'eager')."
        )
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    scores = _Scores(num_requests, device)
    hf_model: Any = model  # a transformers model: its head and decoder are reached by their getters
    pending = _PendingHead(hf_model.get_output_embeddings(), scores) if _separable_head(model) else None
    scored_pass = pending is not None and supports_scored_pass(model)
    decoder_config = hf_model.get_decoder().config if hasattr(hf_model, "get_decoder") else hf_model.config
    start = time.perf_counter()
    prefix_of: Any = None  # the CPU prefix tensor whose KV cache `kv` holds (batches of a group share it)
    kv: KV | None = None
    tails_of: Tails | None = None  # the tails whose keys and values `tails_kv` holds
    tails_kv: KV | None = None

    def timed(step: Any, *args: Any) -> Any:
        _sync(device)
        t0 = time.perf_counter()
        out = step(*args)
        _sync(device)
        if timer is not None:
            timer.forward_s += time.perf_counter() - t0
        return out

    progress_bar = tqdm(total=len(batches), desc=desc, disable=not progress, leave=False)
    chunk: list[tuple[Batch, Any]] = []  # batches for the scored pass, run layer by layer together
    chunk_size = 0

    def run_chunk() -> None:
        nonlocal chunk_size
        assert pending is not None  # the scored pass gathers for the head
        for (batch, _), hidden in zip(chunk, timed(scored_hidden_chunk, model, chunk)):  # builds its own masks
            pending.add(hidden, batch)
            if pending.full():
                timed(pending.flush)
        progress_bar.update(len(chunk))
        chunk.clear()
        chunk_size = 0

    for stored in batches:
        batch = stored.to(device)
        if stored.prefix is not None and stored.prefix is not prefix_of:
            prefix_of, kv = stored.prefix, timed(_prefix_kv, model, batch.prefix)
        prefix_kv = kv if stored.prefix is not None else None
        lent_kv: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = prefix_kv
        if stored.tails is not None:
            if stored.tails is not tails_of:
                tails_of = stored.tails
                tails_kv = timed(_tails_kv, model, stored.tails, prefix_kv)
            lent_kv = _lent_kv(prefix_kv, tails_kv, batch)
        if timer is not None:
            timer.tokens += batch.num_tokens
            timer.forwards += 1
        if scored_pass:
            chunk.append((batch, lent_kv))
            chunk_size += chunk_bytes(batch, decoder_config, param.element_size())
            if chunk_size >= CHUNK_BYTES:
                run_chunk()
            continue
        # Masks and the lent cache are bookkeeping: built outside the timed region (the arguments of `timed`).
        mask = decoder_mask(decoder_config, batch, dtype)
        if pending is None:
            timed(_score_full_forward, model, batch, mask, _lent(model, lent_kv, batch), scores)
        else:
            pending.add(timed(_scored_hidden, model, batch, mask, _lent(model, lent_kv, batch)), batch)
            if pending.full():
                timed(pending.flush)
        progress_bar.update(1)
    if chunk:
        run_chunk()
    progress_bar.close()
    if pending is not None:
        timed(pending.flush)
    result = scores.lls.cpu().numpy(), (scores.misses == 0).cpu().numpy()
    if timer is not None:
        timer.total_s += time.perf_counter() - start
    return result
