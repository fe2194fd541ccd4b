"""Sliding attention windows (Mistral's layers, Qwen2's sliding layers) in the evaluation's 4-D masks.

transformers uses a 4-D mask as given, for every layer: its sliding-window masks are not built. So the window goes
into our masks, closing keys a query's own forward pass would not see (`Batch.attention_mask`); without it, rows
longer than the window were scored as if the model attended to all of them, not as lm-eval's plain forward pass does.
Each layer's window comes from the layer itself where it keeps one (Qwen2's attention: None on full-attention
layers, so dropped or reordered layers keep theirs), else from the config (Mistral: every layer).
"""

from __future__ import annotations

from typing import Any

import torch

from nas.errors import NASError
from nas.evaluation.batching import Batch

FULL, SLIDING = "full_attention", "sliding_attention"


def layer_window(layer: Any, config: Any) -> int | None:
    """The sliding window of a decoder layer's attention, in tokens, or None (it attends to every earlier key)."""
    attention = getattr(layer, "self_attn", None)
    if attention is not None and hasattr(attention, "sliding_window"):
        return attention.sliding_window
    return getattr(config, "sliding_window", None)


class LayerMasks:
    """A batch's additive masks, one per distinct window among the layers that run (built on first use)."""

    def __init__(self, batch: Batch, dtype: torch.dtype, config: Any, gap: int = 0) -> None:
        self.batch, self.dtype, self.config, self.gap = batch, dtype, config, gap
        self._masks: dict[int | None, torch.Tensor] = {}

    def __call__(self, layer: Any) -> torch.Tensor:
        """The mask of `layer`: with its window where the window closes a key in this batch, else the full one."""
        window = layer_window(layer, self.config)
        mask = self._masks.get(window)
        if mask is None:
            effective = window if self.batch.window_matters(window) else None
            mask = self._masks.get(effective)
            if mask is None:
                mask = self.batch.attention_mask(self.dtype, self.gap, effective)
            self._masks[window] = self._masks[effective] = mask
        return mask


def decoder_mask(decoder_config: Any, batch: Batch, dtype: torch.dtype) -> torch.Tensor | dict[str, torch.Tensor]:
    """The attention mask argument of transformers' decoder for `batch`: one 4-D mask, or per layer type where
    sliding and full-attention layers are mixed (the decoder then picks each layer's by `config.layer_types`)."""
    window = getattr(decoder_config, "sliding_window", None)
    full = batch.attention_mask(dtype)
    if window is None or not batch.window_matters(window):
        return full
    types = getattr(decoder_config, "layer_types", None)
    if types is None:  # Mistral: every layer slides
        return batch.attention_mask(dtype, window=window)
    unknown = sorted(set(types) - {FULL, SLIDING})
    if unknown:
        raise NASError(
            f"This model's layer types include {unknown}, whose attention masks the evaluation does not build (it "
            f"builds {FULL!r} and {SLIDING!r} ones), and its rows reach the sliding window of {window} tokens, so "
            "its scores would not be lm-eval's. Evaluate it on tasks whose rows are shorter than the window, or "
            "score it with lm-eval itself (`lm_eval.simple_evaluate`)."
        )
    if SLIDING not in types:
        return full
    return {FULL: full, SLIDING: batch.attention_mask(dtype, window=window)}
