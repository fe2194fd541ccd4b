"""A SliceGPT-sliced Llama (Ashkboos et al. 2024): every weight that reads or writes the residual stream works
in a rotated, narrower basis, and each residual connection carries the `hidden_size` x `hidden_size` matrix
that takes the stream from one block's basis to the next one's. The RMSNorms have no weight (it is folded
into the linears that follow) and divide by the original width (`config.norm_dim`).

Saved beside sliced models and loaded with `trust_remote_code=True`; it depends on transformers only.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import LlamaForCausalLM, LlamaModel
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

from .configuration_nas_sliced import NasSlicedLlamaConfig


class SlicedRMSNorm(nn.Module):
    """x / rms(x), the mean of squares taken over the original width `norm_dim` (SliceGPT's RMSN)."""

    def __init__(self, size: int, norm_dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.norm_dim = norm_dim
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        dtype = hidden_states.dtype
        x = hidden_states.to(torch.float32)
        variance = x.pow(2).sum(-1, keepdim=True) / self.norm_dim
        return self.weight * (x * torch.rsqrt(variance + self.variance_epsilon)).to(dtype)


class NasSlicedLlamaDecoderLayer(LlamaDecoderLayer):
    def __init__(self, config: NasSlicedLlamaConfig, layer_idx: int) -> None:
        super().__init__(config, layer_idx)
        size, eps = config.hidden_size, config.rms_norm_eps
        self.input_layernorm = SlicedRMSNorm(size, config.norm_dim, eps)
        self.post_attention_layernorm = SlicedRMSNorm(size, config.norm_dim, eps)
        self.attn_shortcut = nn.Parameter(torch.eye(size))
        self.mlp_shortcut = nn.Parameter(torch.eye(size))

    def forward(self, hidden_states: torch.Tensor, **kwargs) -> torch.Tensor:
        kwargs.pop("hidden_states", None)
        attended, _ = self.self_attn(hidden_states=self.input_layernorm(hidden_states), **kwargs)
        hidden_states = hidden_states @ self.attn_shortcut.to(hidden_states.dtype) + attended
        mixed = self.mlp(self.post_attention_layernorm(hidden_states))
        return hidden_states @ self.mlp_shortcut.to(hidden_states.dtype) + mixed


class NasSlicedLlamaModel(LlamaModel):
    config_class = NasSlicedLlamaConfig

    def __init__(self, config: NasSlicedLlamaConfig) -> None:
        super().__init__(config)
        self.layers = nn.ModuleList(NasSlicedLlamaDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = SlicedRMSNorm(config.hidden_size, config.norm_dim, config.rms_norm_eps)
        self.post_init()


class NasSlicedLlamaForCausalLM(LlamaForCausalLM):
    config_class = NasSlicedLlamaConfig

    def __init__(self, config: NasSlicedLlamaConfig) -> None:
        super().__init__(config)
        self.model = NasSlicedLlamaModel(config)
        self.post_init()
