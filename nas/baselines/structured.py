"""Structured baselines that keep the Llama architecture, each expressed as a `SubNetwork` of a (permuted)
copy of the model, so the same slicing, measurement and export serve them and the searched sub-networks:

- `LayerDrop` (ShortGPT, Men et al. 2024): drop the layers whose output is most like their input, by
  Block Influence = 1 - cos(input, output) averaged over the calibration tokens. `ratio`: layers removed.
- `WidthCut`: our own importance reordering (`nas.reorder`), then one uniform slice of every layer's MLP
  and KV groups, no search: the control that tells whether search matters. `ratio`: width removed.
- `LlmPruner` (Ma et al. 2023): coupled structure groups (an MLP channel: its `gate_proj`/`up_proj` rows
  and `down_proj` column; a KV group: its key/value head, its query heads and their `o_proj` columns)
  scored by first-order Taylor importance, sum |w * dL/dw| over the group's weights, gradients of the LM
  loss on calibration text; in the blocks its authors prune (layers 4-30 of LLaMA's 32, scaled to the
  model's depth) the lowest-scoring `ratio` of each layer's channels and groups is removed. No recovery
  fine-tune here (LLaMA-NAS Table 3 compares without it).
"""

from __future__ import annotations

import time
from typing import Any

import torch

from nas.baselines.base import Baseline, BaselineError, Pruned
from nas.supernet.elastic_model import shape_of
from nas.supernet.importance import ImportanceScores, compute_importance
from nas.supernet.metrics import sub_network_cost
from nas.supernet.permutation import reorder_by_importance
from nas.supernet.subnetwork import ModelShape, SubNetwork


def _pruned_sub_network(
    method: str, ratio: float, model: Any, sub: SubNetwork, started: float, **details: Any
) -> Pruned:
    shape = shape_of(model)
    cost = sub_network_cost(shape, sub)
    return Pruned(
        method=method,
        ratio=ratio,
        model=model,
        sub=sub,
        params=cost.params,
        size_bytes={k: int(v) for k, v in cost.size_bytes.items()},
        flops_per_token=cost.flops_per_token,
        seconds=time.perf_counter() - started,
        details={"description": sub.describe(), **details},
    )


def _kept(count: int, ratio: float, minimum: int = 1) -> int:
    return max(minimum, round(count * (1.0 - ratio)))


class LayerDrop(Baseline):
    """ShortGPT: remove the `round(ratio x layers)` layers with the lowest Block Influence."""

    name = "layer_drop"
    ratio_meaning = "fraction of decoder layers removed"

    def check(self, ratio: float, shape: ModelShape | None = None) -> None:
        super().check(ratio, shape)
        if shape is not None and shape.num_layers - round(ratio * shape.num_layers) < 1:
            raise BaselineError(
                f"layer_drop: ratio={ratio} removes all {shape.num_layers} layers of this model; use a ratio below "
                f"{(shape.num_layers - 0.5) / shape.num_layers:.3f}."
            )

    def prune(self, model: Any, tokenizer: Any, calibration: list[Any] | None, ratio: float) -> Pruned:
        started = time.perf_counter()
        shape = shape_of(model)
        influence = compute_importance(model, calibration or [], progress=False, desc="block influence").layers
        dropped = sorted(sorted(range(shape.num_layers), key=lambda i: influence[i])[: round(ratio * shape.num_layers)])
        kept = [i for i in range(shape.num_layers) if i not in dropped]
        n = len(kept)
        sub = SubNetwork(tuple(kept), (shape.intermediate_size,) * n, (shape.num_heads,) * n, shape.hidden_size)
        return _pruned_sub_network(
            self.name, ratio, model, sub, started, dropped_layers=dropped, block_influence=[float(v) for v in influence]
        )


def _uniform_width(shape: ModelShape, ratio: float, layers: range | None = None) -> SubNetwork:
    """Every layer (or those in `layers`) at `1 - ratio` of its MLP width and KV groups; the others whole."""
    chosen = range(shape.num_layers) if layers is None else layers
    mlp = [
        _kept(shape.intermediate_size, ratio) if i in chosen else shape.intermediate_size
        for i in range(shape.num_layers)
    ]
    groups = [_kept(shape.num_kv_heads, ratio) if i in chosen else shape.num_kv_heads for i in range(shape.num_layers)]
    heads = [g * shape.group_size for g in groups]
    return SubNetwork(tuple(range(shape.num_layers)), tuple(mlp), tuple(heads), shape.hidden_size)


class WidthCut(Baseline):
    """Importance reordering (`nas.supernet.importance`), then a uniform slice of MLP widths and KV groups."""

    name = "width_cut"
    ratio_meaning = "fraction of every layer's MLP width and KV groups removed"

    def prune(self, model: Any, tokenizer: Any, calibration: list[Any] | None, ratio: float) -> Pruned:
        started = time.perf_counter()
        if ratio > 0:  # nothing to cut: the model itself, not a permuted copy (equal only up to rounding)
            scores = compute_importance(model, calibration or [], progress=False, desc="importance")
            reorder_by_importance(model, scores, hidden=False, layers=False)
        return _pruned_sub_network(self.name, ratio, model, _uniform_width(shape_of(model), ratio), started)


def pruned_block_range(num_layers: int) -> range:
    """The layers LLM-Pruner prunes: 4 to 30 of LLaMA-7B's 32 (the first and last ones are the most
    sensitive), at the same fractions of the model's depth."""
    return range(round(num_layers * 4 / 32), round(num_layers * 30 / 32))


def taylor_scores(model: Any, batches: list[torch.Tensor]) -> ImportanceScores:
    """First-order Taylor importance of every MLP channel and KV group: sum over the group's weights of
    |w * dL/dw|, with dL/dw the gradient of the LM loss summed over the calibration batches."""
    shape = shape_of(model)
    device = next(model.parameters()).device
    was_training = model.training
    requires = {name: p.requires_grad for name, p in model.named_parameters()}
    model.eval()
    model.zero_grad(set_to_none=True)
    try:
        for p in model.parameters():
            p.requires_grad_(True)
        with model.sub_network(SubNetwork.full(shape)):
            for batch in batches:
                ids = batch.to(device)
                model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
        mlp, heads = [], []
        d = shape.head_dim
        for layer in model.model.layers:
            attn, m = layer.self_attn, layer.mlp

            def saliency(weight: torch.Tensor) -> torch.Tensor:
                grad = weight.grad if weight.grad is not None else torch.zeros_like(weight)
                return (weight.detach() * grad).abs().float()

            channel = saliency(m.gate_proj.weight).sum(1) + saliency(m.up_proj.weight).sum(1)
            channel += saliency(m.down_proj.weight).sum(0)
            kv = (saliency(attn.k_proj.weight) + saliency(attn.v_proj.weight)).sum(1).view(shape.num_kv_heads, d).sum(1)
            q = saliency(attn.q_proj.weight).sum(1) + saliency(attn.o_proj.weight).sum(0)
            kv += q.view(shape.num_kv_heads, shape.group_size * d).sum(1)
            mlp.append(channel.tolist())
            heads.append(kv.tolist())
    finally:
        model.zero_grad(set_to_none=True)
        for name, p in model.named_parameters():
            p.requires_grad_(requires[name])
        model.train(was_training)
    return ImportanceScores(
        mlp=mlp,
        heads=heads,
        hidden=[0.0] * shape.hidden_size,
        layers=[0.0] * shape.num_layers,
        num_tokens=sum(b.numel() for b in batches),
    )


class LlmPruner(Baseline):
    """LLM-Pruner without recovery: Taylor-scored coupled groups, `ratio` of them removed in the pruned blocks."""

    name = "llm_pruner"
    supports_recovery = True
    ratio_meaning = "fraction of the MLP channels and KV groups removed in each pruned block"

    def prune(self, model: Any, tokenizer: Any, calibration: list[Any] | None, ratio: float) -> Pruned:
        started = time.perf_counter()
        shape = shape_of(model)
        if ratio > 0:  # the kept groups come first; at ratio 0 the model itself
            reorder_by_importance(model, taylor_scores(model, calibration or []), hidden=False, layers=False)
        blocks = pruned_block_range(shape.num_layers)
        sub = _uniform_width(shape, ratio, blocks)
        return _pruned_sub_network(self.name, ratio, model, sub, started, pruned_layers=[blocks.start, blocks.stop - 1])
