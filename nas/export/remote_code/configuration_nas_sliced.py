"""The config of a SliceGPT-sliced Llama (`modeling_nas_sliced.py`); this file depends on transformers only."""

from __future__ import annotations

from transformers import LlamaConfig


class NasSlicedLlamaConfig(LlamaConfig):
    """`LlamaConfig` whose `hidden_size` is the sliced width of the residual stream; `norm_dim` is the original
    width, by which the (weightless) RMSNorms still divide, as SliceGPT's do."""

    # The base architecture's own type: AutoTokenizer reads the config first and needs no remote code for it.
    model_type = "llama"

    def __init__(self, norm_dim: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.norm_dim = int(norm_dim or self.hidden_size)
