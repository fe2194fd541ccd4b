"""A Llama whose decoder layers each have their own MLP width and number of attention heads.

Saved beside exported heterogeneous sub-networks and loaded with `trust_remote_code=True`. It reuses
transformers' Llama modules unchanged and only resizes each layer's linear layers, so the arithmetic
is exactly Llama's; it depends on transformers only.
"""

from __future__ import annotations

from torch import nn
from transformers import LlamaForCausalLM, LlamaModel

from .configuration_nas_llama import NasLlamaConfig


def _resize_layer(layer: nn.Module, config: NasLlamaConfig, index: int) -> None:
    hidden, head_dim = config.hidden_size, config.head_dim
    heads = config.layer_num_attention_heads[index]
    kv_heads = config.layer_num_key_value_heads[index]
    width = config.layer_intermediate_sizes[index]
    attn_bias, mlp_bias = config.attention_bias, config.mlp_bias
    attn, mlp = layer.self_attn, layer.mlp
    # Llama's attention infers the head count from the projection width; the GQA ratio is unchanged.
    attn.q_proj = nn.Linear(hidden, heads * head_dim, bias=attn_bias)
    attn.k_proj = nn.Linear(hidden, kv_heads * head_dim, bias=attn_bias)
    attn.v_proj = nn.Linear(hidden, kv_heads * head_dim, bias=attn_bias)
    attn.o_proj = nn.Linear(heads * head_dim, hidden, bias=attn_bias)
    mlp.gate_proj = nn.Linear(hidden, width, bias=mlp_bias)
    mlp.up_proj = nn.Linear(hidden, width, bias=mlp_bias)
    mlp.down_proj = nn.Linear(width, hidden, bias=mlp_bias)
    mlp.intermediate_size = width


class NasLlamaModel(LlamaModel):
    config_class = NasLlamaConfig

    def __init__(self, config: NasLlamaConfig) -> None:
        super().__init__(config)
        for index, layer in enumerate(self.layers):
            _resize_layer(layer, config, index)
        self.post_init()


class NasLlamaForCausalLM(LlamaForCausalLM):
    config_class = NasLlamaConfig

    def __init__(self, config: NasLlamaConfig) -> None:
        super().__init__(config)
        self.model = NasLlamaModel(config)
        self.post_init()
