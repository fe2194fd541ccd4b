"""Llama-family models (Llama, Mistral, Qwen2) whose decoder layers each have their own MLP width and
number of attention heads.

Saved beside exported heterogeneous sub-networks and loaded with `trust_remote_code=True`. It reuses
transformers' modules unchanged and only resizes each layer's linear layers (keeping which of them
have a bias), so the arithmetic is exactly the base model's; it depends on transformers only.
"""

from __future__ import annotations

from torch import nn
from transformers import (
    LlamaForCausalLM,
    LlamaModel,
    MistralForCausalLM,
    MistralModel,
    Qwen2ForCausalLM,
    Qwen2Model,
)

from .configuration_nas_llama import NasLlamaConfig, NasMistralConfig, NasQwen2Config


def _linear(old: nn.Linear, in_features: int, out_features: int) -> nn.Linear:
    return nn.Linear(in_features, out_features, bias=old.bias is not None)


def _resize_layer(layer: nn.Module, config, index: int) -> None:
    hidden, head_dim = config.hidden_size, config.head_dim
    heads = config.layer_num_attention_heads[index]
    kv_heads = config.layer_num_key_value_heads[index]
    width = config.layer_intermediate_sizes[index]
    attn, mlp = layer.self_attn, layer.mlp
    # The attention infers the head count from the projection width; the GQA ratio is unchanged.
    attn.q_proj = _linear(attn.q_proj, hidden, heads * head_dim)
    attn.k_proj = _linear(attn.k_proj, hidden, kv_heads * head_dim)
    attn.v_proj = _linear(attn.v_proj, hidden, kv_heads * head_dim)
    attn.o_proj = _linear(attn.o_proj, heads * head_dim, hidden)
    mlp.gate_proj = _linear(mlp.gate_proj, hidden, width)
    mlp.up_proj = _linear(mlp.up_proj, hidden, width)
    mlp.down_proj = _linear(mlp.down_proj, width, hidden)
    mlp.intermediate_size = width


def _resize_layers(model: nn.Module, config) -> None:
    for index, layer in enumerate(model.layers):
        _resize_layer(layer, config, index)


class NasLlamaModel(LlamaModel):
    config_class = NasLlamaConfig

    def __init__(self, config: NasLlamaConfig) -> None:
        super().__init__(config)
        _resize_layers(self, config)
        self.post_init()


class NasLlamaForCausalLM(LlamaForCausalLM):
    config_class = NasLlamaConfig

    def __init__(self, config: NasLlamaConfig) -> None:
        super().__init__(config)
        self.model = NasLlamaModel(config)
        self.post_init()


class NasMistralModel(MistralModel):
    config_class = NasMistralConfig

    def __init__(self, config: NasMistralConfig) -> None:
        super().__init__(config)
        _resize_layers(self, config)
        self.post_init()


class NasMistralForCausalLM(MistralForCausalLM):
    config_class = NasMistralConfig

    def __init__(self, config: NasMistralConfig) -> None:
        super().__init__(config)
        self.model = NasMistralModel(config)
        self.post_init()


class NasQwen2Model(Qwen2Model):
    config_class = NasQwen2Config

    def __init__(self, config: NasQwen2Config) -> None:
        super().__init__(config)
        _resize_layers(self, config)
        self.post_init()


class NasQwen2ForCausalLM(Qwen2ForCausalLM):
    config_class = NasQwen2Config

    def __init__(self, config: NasQwen2Config) -> None:
        super().__init__(config)
        self.model = NasQwen2Model(config)
        self.post_init()
