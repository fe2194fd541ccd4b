"""Quantization of found sub-networks (bitsandbytes LLM.int8 and NF4) and their re-evaluation."""

from __future__ import annotations

from nas.quantization.config import METHODS, QuantizationConfig, QuantizationError
from nas.quantization.quantize import (
    QuantizedModel,
    load_quantized,
    memory_footprint,
    quantize_sub_network,
    save_quantized,
)
from nas.quantization.scores import score_quantized

__all__ = [
    "METHODS",
    "QuantizationConfig",
    "QuantizationError",
    "QuantizedModel",
    "load_quantized",
    "memory_footprint",
    "quantize_sub_network",
    "save_quantized",
    "score_quantized",
]
