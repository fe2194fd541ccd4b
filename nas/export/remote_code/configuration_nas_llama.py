"""Configurations of Llama-family models (Llama, Mistral, Qwen2) whose layers have their own MLP width
and head count.

Saved beside exported heterogeneous sub-networks and loaded with `trust_remote_code=True`; it depends
on transformers only, not on the project that exported it.
"""

from __future__ import annotations

from transformers import LlamaConfig, MistralConfig, Qwen2Config


def _set_layer_sizes(
    config,
    layer_intermediate_sizes: list[int] | None,
    layer_num_attention_heads: list[int] | None,
    layer_num_key_value_heads: list[int] | None,
) -> None:
    n = config.num_hidden_layers
    config.layer_intermediate_sizes = list(layer_intermediate_sizes or [config.intermediate_size] * n)
    config.layer_num_attention_heads = list(layer_num_attention_heads or [config.num_attention_heads] * n)
    config.layer_num_key_value_heads = list(layer_num_key_value_heads or [config.num_key_value_heads] * n)
    for name in ("layer_intermediate_sizes", "layer_num_attention_heads", "layer_num_key_value_heads"):
        if len(getattr(config, name)) != n:
            raise ValueError(f"{name} needs {n} entries (num_hidden_layers), got {len(getattr(config, name))}.")
    groups = {h // kv for h, kv in zip(config.layer_num_attention_heads, config.layer_num_key_value_heads)}
    if groups != {config.num_attention_heads // config.num_key_value_heads}:
        raise ValueError("Every layer must keep the model's query heads per key/value head (whole GQA groups).")


class NasLlamaConfig(LlamaConfig):
    """`LlamaConfig` plus per-layer sizes (one entry per decoder layer)."""

    # The base architecture's own type: transformers then reads this config without remote code wherever it
    # only needs the base fields (AutoTokenizer loads the config first, and would ask to run code otherwise).
    model_type = "llama"

    def __init__(
        self,
        layer_intermediate_sizes: list[int] | None = None,
        layer_num_attention_heads: list[int] | None = None,
        layer_num_key_value_heads: list[int] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        _set_layer_sizes(self, layer_intermediate_sizes, layer_num_attention_heads, layer_num_key_value_heads)


class NasMistralConfig(MistralConfig):
    """`MistralConfig` plus per-layer sizes (one entry per decoder layer)."""

    # The base architecture's own type: transformers then reads this config without remote code wherever it
    # only needs the base fields (AutoTokenizer loads the config first, and would ask to run code otherwise).
    model_type = "mistral"

    def __init__(
        self,
        layer_intermediate_sizes: list[int] | None = None,
        layer_num_attention_heads: list[int] | None = None,
        layer_num_key_value_heads: list[int] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        _set_layer_sizes(self, layer_intermediate_sizes, layer_num_attention_heads, layer_num_key_value_heads)


class NasQwen2Config(Qwen2Config):
    """`Qwen2Config` plus per-layer sizes (one entry per decoder layer)."""

    # The base architecture's own type: transformers then reads this config without remote code wherever it
    # only needs the base fields (AutoTokenizer loads the config first, and would ask to run code otherwise).
    model_type = "qwen2"

    def __init__(
        self,
        layer_intermediate_sizes: list[int] | None = None,
        layer_num_attention_heads: list[int] | None = None,
        layer_num_key_value_heads: list[int] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        _set_layer_sizes(self, layer_intermediate_sizes, layer_num_attention_heads, layer_num_key_value_heads)
