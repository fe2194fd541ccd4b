"""The evaluation's decoder pass for Llama-family models: hidden states at the scored positions only.

Hugging Face's forward computes every position of every layer; the evaluation reads a few positions per row
(MMLU: one, where " A".." D" are scored). Only the last decoder layer can be cut to them: each earlier layer feeds
the next one's keys and values at every position, but the last layer's queries, attention output, MLP and the
final norm matter only where a score is read. That layer here projects keys and values at every position and does
the rest at the scored positions only (on SmolLM2-135M that rest is 94% of a layer's FLOPs per position; an MMLU row
scores one position of about a hundred).

The other layers call the same modules in the same order as transformers' Llama, Mistral and Qwen2 decoder layers,
without their copies: on CPU, grouped-query attention through SDPA's `enable_gqa` instead of keys and values
repeated per query head; the rotary embedding's sign folded into `sin` once per batch instead of a negated half per
layer and tensor, added half by half; the MLP's activation and product in place; and a key length rounded up to a
multiple of 16 with closed keys after the prefix (SDPA's CPU kernel runs a ragged last block slowly). Without the
closed keys and with the last layer run whole, these layers gave the same bits as transformers' on SmolLM2-135M's
MMLU batches (an AVX-512 CPU); SDPA's blocks over the longer key length and the last layer's attention over fewer
queries round differently (|d hidden| up to 5e-5 of hidden states up to 28 there, log-likelihoods within 7e-5 of
lm-eval's). Tests hold it to transformers' decoder within 1e-5 on small models.

The pass runs layer by layer over a chunk of batches (`scored_hidden_chunk`) rather than batch by batch, so each
layer's projections are packed once for all of them on CPU (`packed_linear`: MKL's product without its per-call
copy of the weight); a batch's computation is the same either way, bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import SiLUActivation
from transformers.models.llama.modeling_llama import LlamaDecoderLayer
from transformers.models.mistral.modeling_mistral import MistralDecoderLayer
from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer

from nas.evaluation.attention_windows import LayerMasks
from nas.evaluation.batching import Batch
from nas.evaluation.packed_linear import PackedLinears, packing_applies

KV = list[tuple[torch.Tensor, torch.Tensor]]

# Decoder layers that compute what `_layer` does (Mistral's and Qwen2's are Llama's; Qwen2's q/k/v biases are in
# its projection modules). Sliding-window layers get a mask with their window (`attention_windows`).
SUPPORTED_LAYERS = (LlamaDecoderLayer, MistralDecoderLayer, Qwen2DecoderLayer)


def supports_scored_pass(model: Any) -> bool:
    """Whether `scored_hidden_states` computes what the model's own decoder would, for this model."""
    # Eager attention softmaxes in float32 whatever the dtype; SDPA is what this pass runs.
    if getattr(getattr(model, "config", None), "_attn_implementation", None) != "sdpa":
        return False
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    if not all(hasattr(decoder, name) for name in ("embed_tokens", "rotary_emb", "layers", "norm", "config")):
        return False
    # A wrapped layer (activation checkpointing, FSDP) must run through its wrapper.
    layers = _active_layers(decoder)
    return bool(layers) and all(type(layer) in SUPPORTED_LAYERS for layer in layers)


def _active_layers(decoder: Any) -> list[nn.Module]:
    # What transformers' decoder iterates (an elastic layer list yields only the sub-network's layers).
    return list(decoder.layers[: decoder.config.num_hidden_layers])


# SDPA's CPU kernel runs a key length that is a multiple of 16 up to a third faster than one a few keys longer or
# shorter (its tail block is slow): 139 keys of an MMLU row took 3.5 ms where 144 took 2.6 (4 rows x 9 heads, one
# thread). Closed keys are put between the prefix and the row to round the length up.
KEY_ALIGN = 16


def key_gap(batch: Batch) -> int:
    """Closed keys between the lent keys (prefix, tails) and the rows that round a batch's key length up to
    `KEY_ALIGN`."""
    return -(batch.lent_length + batch.input_ids.shape[1]) % KEY_ALIGN


def expand_prefix(kv: Sequence[tuple[torch.Tensor, torch.Tensor]], rows: int) -> KV:
    """Lent per-layer keys and values, [1 or rows, KH, P, d], as [rows, KH, P, d] (views)."""
    return [(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)) for k, v in kv]


class _RowSlots:
    """Flat positions of a [B, T] batch laid out per row: [B, Q, ...], Q the most positions any row has.

    Positions come grouped by row (as `Batch.hidden_index` numbers them), so a position's slot is its rank within
    its row; unused slots are zeros."""

    def __init__(self, flat: torch.Tensor, count: int, width: int) -> None:
        self.flat, self.count = flat, count
        self.rows = torch.div(flat, width, rounding_mode="floor")
        per_row = torch.bincount(self.rows, minlength=count)
        self.slots = torch.arange(len(flat), device=flat.device) - (torch.cumsum(per_row, 0) - per_row)[self.rows]
        self.width = int(per_row.max())

    def lay_out(self, values: torch.Tensor) -> torch.Tensor:
        """[U, ...] values of the positions, as [B, Q, ...]."""
        laid = values.new_zeros(self.count, self.width, *values.shape[1:])
        laid[self.rows, self.slots] = values
        return laid

    def pick(self, laid: torch.Tensor) -> torch.Tensor:
        """[B, Q, ...] back to the positions' [U, ...]."""
        return laid[self.rows, self.slots]


class _Rotary:
    """A batch's rotary embedding for [B, T, heads, head_dim] tensors: `x * cos + rotate_half(x) * sin` with the
    rotation's sign folded into `sin` (-x2 * s1 == x2 * -s1 exactly), added half by half."""

    def __init__(self, cos: torch.Tensor, sin: torch.Tensor) -> None:
        half = sin.shape[-1] // 2
        self.cos = cos[:, :, None]
        self.sin = torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)[:, :, None]

    def at(self, positions: _RowSlots) -> _Rotary:
        """The embedding of `positions`, laid out per row as [B, Q, 1, head_dim]."""
        picked = object.__new__(_Rotary)
        for name in ("cos", "sin"):
            setattr(picked, name, positions.lay_out(getattr(self, name).flatten(0, 1)[positions.flat]))
        return picked

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # Per half instead of a concatenated rotation: the same products and sums, half the passes over memory.
        half = x.shape[-1] // 2
        out = x * self.cos
        out[..., :half] += x[..., half:] * self.sin[..., :half]
        out[..., half:] += x[..., :half] * self.sin[..., half:]
        return out


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
    """SDPA of [B, H, Q, d] queries over [B, KH, S, d] keys and values with an additive mask."""
    if q.device.type == "cpu":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=True)
    # Elsewhere SDPA's masked kernels take no grouped heads (transformers repeats them too).
    groups = q.shape[1] // k.shape[1]
    k, v = (t.repeat_interleave(groups, dim=1) for t in (k, v))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


def _mlp(mlp: Any, x: torch.Tensor, linear: PackedLinears) -> torch.Tensor:
    gate = linear(mlp.gate_proj, x)
    if isinstance(mlp.act_fn, SiLUActivation | nn.SiLU):
        F.silu(gate, inplace=True)
    else:
        gate = mlp.act_fn(gate)
    gate.mul_(linear(mlp.up_proj, x))
    return linear(mlp.down_proj, gate)


def _keys_values(
    attention: Any, x: torch.Tensor, rotary: _Rotary, prefix: tuple | None, gap: int, linear: PackedLinears
) -> tuple:
    """The layer's keys (rotated) and values, [B, KH, P + gap + T, d]: the prefix's if one is lent (expanded over
    the rows), `gap` zeros (closed by the mask), the rows'."""
    shape = (*x.shape[:2], -1, attention.head_dim)
    k = rotary(linear(attention.k_proj, x).view(shape)).transpose(1, 2)
    v = linear(attention.v_proj, x).view(shape).transpose(1, 2)
    rows = x.shape[0]
    keys, values = (
        ([], []) if prefix is None else ([prefix[0].expand(rows, -1, -1, -1)], [prefix[1].expand(rows, -1, -1, -1)])
    )
    if gap:
        closed = k.new_zeros(*k.shape[:2], gap, k.shape[3])
        keys.append(closed)
        values.append(closed)
    if keys:
        k, v = torch.cat([*keys, k], dim=2), torch.cat([*values, v], dim=2)
    return k, v


@dataclass
class _InFlight:
    """A batch between layers: its hidden states and what every layer reuses (masks, rotary, lent keys)."""

    batch: Batch
    h: torch.Tensor
    rotary: _Rotary
    masks: LayerMasks
    lent: Sequence[tuple[torch.Tensor, torch.Tensor]] | None
    gap: int

    def lent_at(self, index: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The keys and values lent to the rows at the `index`-th layer that runs, or None."""
        return None if self.lent is None else self.lent[index]


def _start(decoder: Any, batch: Batch, lent: Sequence[tuple[torch.Tensor, torch.Tensor]] | None) -> _InFlight:
    h = decoder.embed_tokens(batch.input_ids)
    gap = key_gap(batch)
    masks = LayerMasks(batch, h.dtype, decoder.config, gap)  # per layer: its sliding window's, if it has one
    return _InFlight(batch, h, _Rotary(*decoder.rotary_emb(h, batch.position_ids)), masks, lent, gap)


def _layer(layer: Any, index: int, f: _InFlight, linear: PackedLinears) -> torch.Tensor:
    """The batch's hidden states after `layer`, the `index`-th that runs."""
    attention, h = layer.self_attn, f.h
    x = layer.input_layernorm(h)
    k, v = _keys_values(attention, x, f.rotary, f.lent_at(index), f.gap, linear)
    q = f.rotary(linear(attention.q_proj, x).view(*x.shape[:2], -1, attention.head_dim)).transpose(1, 2)
    o = _attention(q, k, v, f.masks(layer), attention.scaling).transpose(1, 2).reshape(*x.shape[:2], -1)
    h = h + linear(attention.o_proj, o)
    return h + _mlp(layer.mlp, layer.post_attention_layernorm(h), linear)


def _last_layer(layer: Any, index: int, f: _InFlight, linear: PackedLinears) -> torch.Tensor:
    """The last layer at the batch's scored positions only, `batch.hidden_index` (keys and values at every
    position)."""
    attention, h, flat = layer.self_attn, f.h, f.batch.hidden_index
    x = layer.input_layernorm(h)
    k, v = _keys_values(attention, x, f.rotary, f.lent_at(index), f.gap, linear)
    # Each row's scored positions are that row's queries; unused slots see every key (no NaN).
    positions = _RowSlots(flat, *h.shape[:2])
    query_mask = positions.lay_out(f.masks(layer)[:, 0].flatten(0, 1)[flat])[:, None]
    q = linear(attention.q_proj, x.flatten(0, 1)[flat]).view(len(flat), -1, attention.head_dim)
    q = f.rotary.at(positions)(positions.lay_out(q)).transpose(1, 2)
    o = positions.pick(_attention(q, k, v, query_mask, attention.scaling).transpose(1, 2)).flatten(1)
    h_scored = h.flatten(0, 1)[flat] + linear(attention.o_proj, o)
    return h_scored + _mlp(layer.mlp, layer.post_attention_layernorm(h_scored), linear)


def chunk_bytes(batch: Batch, config: Any, element_size: int) -> int:
    """Bytes a batch holds between layers in `scored_hidden_chunk`: hidden states, a mask, the rotary tables (the
    lent keys are views, or built per layer)."""
    rows, width = batch.input_ids.shape
    keys = batch.lent_length + key_gap(batch) + width
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return rows * width * (config.hidden_size + keys + 2 * head_dim) * element_size


def scored_hidden_chunk(
    model: Any, batches: Sequence[tuple[Batch, Sequence[tuple[torch.Tensor, torch.Tensor]] | None]]
) -> list[torch.Tensor]:
    """Per batch, the final-norm hidden states at `batch.hidden_index` (flat positions), [U, hidden]: what the
    model's decoder returns there. With each batch, the keys and values lent to its rows per layer (None for none):
    the batch prefix's, [1, KH, P, d], then the rows' tails', [B, KH, P + W, d] together (see `loglikelihood`).

    Layer by layer over all the batches, so each layer's projections are packed once for all of them
    (`packed_linear`; the chunk's size is the caller's, `chunk_bytes`)."""
    decoder = model.get_decoder()
    layers = _active_layers(decoder)
    flights = [_start(decoder, batch, lent) for batch, lent in batches]
    packing = packing_applies(next(model.parameters()))
    for index, layer in enumerate(layers[:-1]):
        linear = PackedLinears(packing)  # this layer's packs only: freed with it
        for f in flights:
            f.h = _layer(layer, index, f, linear)
    last, linear = layers[-1], PackedLinears(packing)
    return [decoder.norm(_last_layer(last, len(layers) - 1, f, linear)) for f in flights]


def scored_hidden_states(model: Any, batch: Batch, prefix_kv: KV | None) -> torch.Tensor:
    """`scored_hidden_chunk` of one batch."""
    return scored_hidden_chunk(model, [(batch, prefix_kv)])[0]
