"""Runs packed batches through the live model and sums each request's continuation log-likelihood.

Only the scored positions go through the LM head (the decoder's hidden states are gathered first), so
the head's cost, a fifth of a small model's FLOPs, is paid for a few positions per request instead of
every input token. Log-softmax runs in float32 over the full vocabulary, as lm-eval's HFLM does for
fp32 models; "greedy" is lm-eval's `is_greedy`: every target token is the argmax at its position.
A batch's shared prefix runs once per evaluation; its KV cache is expanded over the batch's rows.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from nas.errors import NASError
from nas.evaluation.batching import Batch
from nas.evaluation.hf_compat import cache_kwargs, cache_of


@dataclass
class ForwardTimer:
    """Seconds spent inside the model's forward passes (CUDA synchronised) and in the whole loop."""

    forward_s: float = 0.0
    total_s: float = 0.0
    tokens: int = 0
    forwards: int = 0
    batches: list[float] = field(default_factory=list)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _separable_head(model: Any) -> bool:
    # Models that post-process logits (soft-capping, scaling) need the full forward.
    config = getattr(model, "config", None)
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None):
        return False
    return hasattr(model, "get_decoder") and model.get_output_embeddings() is not None


KV = list[tuple[torch.Tensor, torch.Tensor]]


def _prefix_kv(model: Any, prefix: torch.Tensor) -> KV:
    """Per-layer keys and values of the shared prefix, [1, kv_heads, P, head_dim] each."""
    positions = torch.arange(prefix.numel(), device=prefix.device)[None]
    out = model.get_decoder()(input_ids=prefix[None], position_ids=positions, use_cache=True)
    # With dropped layers only the first (executed) cache layers are filled.
    return [(layer.keys, layer.values) for layer in cache_of(out).layers if layer.is_initialized]


def _lend(model: Any, kv: KV, rows: int) -> dict[str, Any]:
    """The prefix's KV cache expanded over `rows` rows, as the decoder's cache argument."""
    from transformers import DynamicCache

    lent = DynamicCache(ddp_cache_data=[(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)) for k, v in kv])
    return cache_kwargs(model.get_decoder(), lent)


def _scored_logits(model: Any, batch: Batch, mask: torch.Tensor, extra: dict[str, Any]) -> torch.Tensor:
    inputs = {"input_ids": batch.input_ids, "attention_mask": mask, "position_ids": batch.position_ids}
    if _separable_head(model):
        hidden = model.get_decoder()(**inputs, use_cache=False, **extra).last_hidden_state
        return model.get_output_embeddings()(hidden[batch.score_row, batch.score_col])
    if extra:
        extra = cache_kwargs(model, next(iter(extra.values())))
    return model(**inputs, use_cache=False, **extra).logits[batch.score_row, batch.score_col]


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
    lls = torch.zeros(num_requests, dtype=torch.float64, device=device)
    misses = torch.zeros(num_requests, dtype=torch.long, device=device)
    start = time.perf_counter()
    prefix_of: Any = None  # the CPU prefix tensor whose KV cache `kv` holds (batches of a group share it)
    kv: KV | None = None
    for stored in tqdm(batches, desc=desc, disable=not progress, leave=False):
        batch = stored.to(device)
        forward_s = 0.0
        if stored.prefix is not None and stored.prefix is not prefix_of:
            _sync(device)
            t0 = time.perf_counter()
            prefix_of, kv = stored.prefix, _prefix_kv(model, batch.prefix)
            _sync(device)
            forward_s += time.perf_counter() - t0
        # Masks and the lent cache are bookkeeping: built outside the timed region.
        mask = batch.attention_mask(dtype)
        extra = _lend(model, kv, batch.input_ids.shape[0]) if stored.prefix is not None and kv is not None else {}
        _sync(device)
        t0 = time.perf_counter()
        logits = _scored_logits(model, batch, mask, extra)
        logprobs = F.log_softmax(logits.float(), dim=-1)
        _sync(device)
        forward_s += time.perf_counter() - t0
        if timer is not None:
            timer.batches.append(forward_s)
            timer.forward_s += forward_s
            timer.tokens += batch.num_tokens
            timer.forwards += 1
        target = batch.score_target
        lls.index_add_(0, batch.request_ids, logprobs.gather(1, target[:, None])[:, 0].double())
        misses.index_add_(0, batch.request_ids, (logprobs.argmax(dim=-1) != target).long())
    result = lls.cpu().numpy(), (misses == 0).cpu().numpy()
    if timer is not None:
        timer.total_s += time.perf_counter() - start
    return result
