"""Which slice of each weight a sub-network uses: the one rule shared by export, metrics and samplers."""

from __future__ import annotations

from nas.supernet.subnetwork import ATTENTION_LINEARS, MLP_LINEARS, ModelShape, SubNetwork

LINEAR_MODULES = ATTENTION_LINEARS + MLP_LINEARS
NORM_MODULES = ("input_layernorm", "post_attention_layernorm")


def layer_slices(shape: ModelShape, sub: SubNetwork, position: int) -> dict[str, tuple[int, int | None]]:
    """(rows, columns) kept of each weight of kept layer number `position`; columns None for norms.

    Leading slices: the first heads (whole KV groups), MLP channels and hidden channels.
    """
    d, hd = sub.hidden_size, shape.head_dim
    q = sub.num_heads[position] * hd
    kv = sub.num_heads[position] // shape.group_size * hd
    m = sub.mlp_sizes[position]
    return {
        "self_attn.q_proj": (q, d),
        "self_attn.k_proj": (kv, d),
        "self_attn.v_proj": (kv, d),
        "self_attn.o_proj": (d, q),
        "mlp.gate_proj": (m, d),
        "mlp.up_proj": (m, d),
        "mlp.down_proj": (d, m),
        "input_layernorm": (d, None),
        "post_attention_layernorm": (d, None),
    }
