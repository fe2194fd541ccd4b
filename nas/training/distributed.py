"""Strategies for training beyond one device: FSDP that shards each decoder layer as its own unit.

Lightning's plain `strategy: fsdp` wraps the whole model as one unit: every rank then gathers all of a 7B
model's weights at once, which is what FSDP exists to avoid. Wrapping each decoder layer (the Llama, Mistral and
Qwen2 layer classes, which the elastic model keeps) gathers one layer at a time.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from lightning.pytorch.strategies import FSDPStrategy
from torch import nn

DECODER_LAYERS = (
    "transformers.models.llama.modeling_llama.LlamaDecoderLayer",
    "transformers.models.mistral.modeling_mistral.MistralDecoderLayer",
    "transformers.models.qwen2.modeling_qwen2.Qwen2DecoderLayer",
)


def _class(path: str) -> type[nn.Module]:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


def fsdp_strategy(
    layer_classes: Sequence[str] = DECODER_LAYERS,
    sharding_strategy: str = "FULL_SHARD",
    activation_checkpointing: bool = False,
    **kwargs: Any,
) -> FSDPStrategy:
    """Lightning's FSDP with one unit per decoder layer (`layer_classes`, dotted paths), optionally recomputing
    each layer's activations in the backward pass (`activation_checkpointing`) to fit longer sequences."""
    classes = {_class(path) for path in layer_classes}
    return FSDPStrategy(
        auto_wrap_policy=classes,
        activation_checkpointing_policy=classes if activation_checkpointing else None,
        sharding_strategy=sharding_strategy,  # type: ignore[arg-type]
        **kwargs,
    )
