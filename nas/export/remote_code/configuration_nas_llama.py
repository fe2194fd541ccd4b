"""Configuration of a Llama whose layers have their own MLP width and head count.

Saved beside exported heterogeneous sub-networks and loaded with `trust_remote_code=True`; it depends
on transformers only, not on the project that exported it.
"""

from __future__ import annotations

from transformers import LlamaConfig


class NasLlamaConfig(LlamaConfig):
    """`LlamaConfig` plus per-layer sizes (one entry per decoder layer)."""

    model_type = "nas_llama"

    def __init__(
        self,
        layer_intermediate_sizes: list[int] | None = None,
        layer_num_attention_heads: list[int] | None = None,
        layer_num_key_value_heads: list[int] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        n = self.num_hidden_layers
        self.layer_intermediate_sizes = list(layer_intermediate_sizes or [self.intermediate_size] * n)
        self.layer_num_attention_heads = list(layer_num_attention_heads or [self.num_attention_heads] * n)
        self.layer_num_key_value_heads = list(layer_num_key_value_heads or [self.num_key_value_heads] * n)
        for name in ("layer_intermediate_sizes", "layer_num_attention_heads", "layer_num_key_value_heads"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} needs {n} entries (num_hidden_layers), got {len(getattr(self, name))}.")
        groups = {h // kv for h, kv in zip(self.layer_num_attention_heads, self.layer_num_key_value_heads)}
        if groups != {self.num_attention_heads // self.num_key_value_heads}:
            raise ValueError("Every layer must keep the model's query heads per key/value head (whole GQA groups).")
