"""Permute an elastic model's weights in place so that "the first k" neurons, KV groups and channels are the
most important ones; store the layer order in the config (layers are not moved).

Each permutation leaves the full model's function unchanged:

- MLP neurons: rows of `gate_proj` / `up_proj` and the matching columns of `down_proj`.
- KV groups: the group's rows of `k_proj` / `v_proj`, its query heads' rows of `q_proj` and the matching
  columns of `o_proj`. Whole heads move, and RoPE acts on each head alike, so attention is unchanged.
- Embedding channels: one permutation of the residual stream, applied to every weight that reads it
  (embedding columns, q/k/v/gate/up columns, LM-head columns), writes it (o_proj/down_proj rows and
  biases) or scales it (every RMSNorm weight). RMSNorm's mean of squares does not depend on channel
  order, so the network computes the same numbers, permuted. Tied embeddings are permuted once.

Layers keep their positions, so checkpoints and sub-networks that name layer indices stay valid;
`config.nas_layer_order` (most to least important) is what `SearchSpace` reads to keep the first k.
Modules are typed `Any`: the Hugging Face module tree is dynamic.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from nas.supernet.elastic_model import shape_of
from nas.supernet.importance import ImportanceError, ImportanceScores, descending_order
from nas.supernet.subnetwork import ModelShape


@dataclass
class Permutations:
    """Which original index now sits at each position: `mlp[layer][new] = old`, likewise `heads`, `hidden`.

    A dimension that was not reordered holds the identity.
    """

    mlp: list[list[int]]
    heads: list[list[int]]
    hidden: list[int]

    @classmethod
    def identity(cls, shape: ModelShape) -> Permutations:
        n = shape.num_layers
        return cls(
            mlp=[list(range(shape.intermediate_size)) for _ in range(n)],
            heads=[list(range(shape.num_kv_heads)) for _ in range(n)],
            hidden=list(range(shape.hidden_size)),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _permute_(tensor: torch.Tensor, index: torch.Tensor, dim: int) -> None:
    # index_select makes a copy first, so copying back into the same storage cannot alias; the
    # parameter object stays the same (optimizers, tied weights and hooks keep pointing at it).
    with torch.no_grad():
        tensor.copy_(tensor.index_select(dim, index.to(tensor.device)))


def _permute_rows(linear: nn.Linear, index: torch.Tensor) -> None:
    _permute_(linear.weight, index, 0)
    if linear.bias is not None:
        _permute_(linear.bias, index, 0)


def _permute_columns(linear: nn.Linear, index: torch.Tensor) -> None:
    _permute_(linear.weight, index, 1)


def permute_mlp(mlp: Any, order: torch.Tensor) -> None:
    """Move intermediate neuron `order[i]` to position `i`."""
    _permute_rows(mlp.gate_proj, order)
    _permute_rows(mlp.up_proj, order)
    _permute_columns(mlp.down_proj, order)


def _block_index(order: torch.Tensor, block: int) -> torch.Tensor:
    """Row indices moving whole blocks of `block` rows: block `order[i]` to block position `i`."""
    return (order[:, None] * block + torch.arange(block)).flatten()


def permute_kv_groups(attn: Any, order: torch.Tensor, shape: ModelShape) -> None:
    """Move KV group `order[i]` (its key/value head and its query heads) to position `i`."""
    kv_rows = _block_index(order, shape.head_dim)
    q_rows = _block_index(order, shape.group_size * shape.head_dim)
    _permute_rows(attn.k_proj, kv_rows)
    _permute_rows(attn.v_proj, kv_rows)
    _permute_rows(attn.q_proj, q_rows)
    _permute_columns(attn.o_proj, q_rows)


def permute_hidden(model: Any, order: torch.Tensor) -> None:
    """Move residual-stream channel `order[i]` to position `i` in every weight that touches it."""
    decoder = model.model
    done: set[int] = set()

    def once(param: torch.Tensor, dim: int) -> None:
        # A tied LM head is the embedding matrix itself; a second pass would permute it twice.
        if id(param) not in done:
            done.add(id(param))
            _permute_(param, order, dim)

    once(decoder.embed_tokens.weight, 1)
    for layer in decoder.layers:
        attn, mlp = layer.self_attn, layer.mlp
        once(layer.input_layernorm.weight, 0)
        once(layer.post_attention_layernorm.weight, 0)
        for reader in (attn.q_proj, attn.k_proj, attn.v_proj, mlp.gate_proj, mlp.up_proj):
            once(reader.weight, 1)
        for writer in (attn.o_proj, mlp.down_proj):
            once(writer.weight, 0)
            if writer.bias is not None:
                once(writer.bias, 0)
    once(decoder.norm.weight, 0)
    once(model.lm_head.weight, 1)


def _reindex(values: list[float], order: list[int]) -> list[float]:
    return [values[i] for i in order]


def reorder_by_importance(
    model: Any,
    scores: ImportanceScores,
    mlp: bool = True,
    heads: bool = True,
    hidden: bool = True,
    layers: bool = True,
) -> tuple[ImportanceScores, Permutations]:
    """Permute `model` in place so the most important neurons, KV groups and channels come first.

    Args:
        model: an elastic model with its full network active (a sub-network would be resliced
            from permuted weights, so it is refused).
        scores: importance computed on this model (`compute_importance`).
        mlp, heads, hidden: which widths to reorder.
        layers: store `scores.layer_order()` as `model.config.nas_layer_order`.

    Returns:
        The scores re-indexed to the new positions (descending along each reordered dimension) and the
        permutations that were applied.
    """
    shape = shape_of(model)
    scores.check_fits(shape)
    if getattr(model, "active_sub_network", None) is not None:
        raise ImportanceError(
            "Reordering needs the full network active (a sub-network is set); call model.reset_super_network() first."
        )
    perms = Permutations.identity(shape)
    new = ImportanceScores(
        mlp=[list(r) for r in scores.mlp],
        heads=[list(r) for r in scores.heads],
        hidden=list(scores.hidden),
        layers=list(scores.layers),
        num_tokens=scores.num_tokens,
    )
    for i, layer in enumerate(model.model.layers):
        if mlp:
            perms.mlp[i] = descending_order(scores.mlp[i])
            permute_mlp(layer.mlp, torch.tensor(perms.mlp[i]))
            new.mlp[i] = _reindex(scores.mlp[i], perms.mlp[i])
        if heads:
            perms.heads[i] = descending_order(scores.heads[i])
            permute_kv_groups(layer.self_attn, torch.tensor(perms.heads[i]), shape)
            new.heads[i] = _reindex(scores.heads[i], perms.heads[i])
    if hidden:
        perms.hidden = descending_order(scores.hidden)
        permute_hidden(model, torch.tensor(perms.hidden))
        new.hidden = _reindex(scores.hidden, perms.hidden)
    if layers:
        model.config.nas_layer_order = scores.layer_order()
    return new, perms
