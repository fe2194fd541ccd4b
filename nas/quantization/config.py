"""What `conf/quantization/*.yaml` describes: the method (none, int8, nf4) and its bitsandbytes options.

int8 is LLM.int8 (Dettmers et al. 2022) on the decoder's linear layers, as in LLaMA-NAS sec. 4.4:
weights in int8 with one scale per output row, activations quantized per row on the fly, and input
features holding any value of magnitude >= `threshold` computed in 16-bit instead (the outlier
decomposition). nf4 is bitsandbytes' 4-bit NormalFloat (QLoRA, Dettmers et al. 2023), blocks of 64
weights with an absmax each, optionally quantized again (double quantization). Embeddings, norms and
the LM head are never quantized; they are held in `dtype`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from nas.errors import NASError

METHODS = ("none", "int8", "nf4")
_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


class QuantizationError(NASError, ValueError):
    """A quantization setting that cannot run as given, or a quantized model that cannot be built."""


def _dtype(key: str, name: str | None) -> torch.dtype | None:
    if name is None:
        return None
    try:
        return _DTYPES[name]
    except KeyError:
        raise QuantizationError(
            f"quantization.{key}={name!r} is not a dtype; use one of {sorted(_DTYPES)} or null."
        ) from None


@dataclass
class QuantizationConfig:
    """One quantization method and its options.

    Args:
        method: `none` (no quantization), `int8` (LLM.int8) or `nf4` (4-bit NormalFloat).
        threshold: int8: outlier threshold of LLM.int8 (6.0 in the paper and in LLaMA-NAS); 0 turns the
            outlier decomposition off (plain vector-wise int8).
        skip_modules: names of linear modules left unquantized (the LM head, as in LLaMA-NAS).
        dtype: precision of everything not quantized (embeddings, norms, head, biases); null: the
            super-network's own dtype. LLaMA-NAS keeps these in 16 bits.
        compute_dtype: nf4: precision of the matmul after de-quantization; null: `dtype`.
        double_quant: nf4: quantize the per-block absmax values too (saves ~0.37 bits per weight).
        device: where the quantized model lives (`cpu`, `cuda`, `cuda:1`, `auto`); null: the
            super-network's device.
    """

    method: str = "none"
    threshold: float = 6.0
    skip_modules: Sequence[str] = field(default_factory=lambda: ["lm_head"])
    dtype: str | None = "float16"
    compute_dtype: str | None = None
    double_quant: bool = True
    device: str | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise QuantizationError(
                f"Unknown quantization method {self.method!r}; choose one of {list(METHODS)} "
                f"(e.g. quantization=int8, one file per method in conf/quantization/)."
            )
        if self.threshold < 0:
            raise QuantizationError(
                f"quantization.threshold={self.threshold}: use 0 (no outlier decomposition) or more (6.0 in LLM.int8)."
            )
        if isinstance(self.skip_modules, str) or not all(isinstance(m, str) for m in self.skip_modules):
            raise QuantizationError(
                f"quantization.skip_modules={self.skip_modules!r}: give a list of module names, e.g. [lm_head]."
            )
        self.skip_modules = list(self.skip_modules)
        _dtype("dtype", self.dtype)
        _dtype("compute_dtype", self.compute_dtype)
        if self.device not in (None, "auto"):
            try:
                torch.device(self.device)
            except (RuntimeError, TypeError):
                raise QuantizationError(
                    f"quantization.device={self.device!r} is not a device; use cpu, cuda, cuda:N, auto or null."
                ) from None

    @property
    def enabled(self) -> bool:
        return self.method != "none"

    @classmethod
    def coerce(cls, spec: QuantizationConfig | str | Mapping[str, Any]) -> QuantizationConfig:
        """A config from itself, a method name (`"int8"`) or a mapping of its fields."""
        if isinstance(spec, QuantizationConfig):
            return spec
        if isinstance(spec, str):
            return cls(method=spec)
        if isinstance(spec, Mapping):
            options = {k: v for k, v in spec.items() if k not in ("_target_", "_convert_")}
            allowed = set(cls.__dataclass_fields__)
            unknown = sorted(set(options) - allowed)
            if unknown:
                raise QuantizationError(f"Unknown quantization options {unknown}; allowed: {sorted(allowed)}.")
            return cls(**options)
        raise QuantizationError(f"Expected a quantization config, a method name or a mapping; got {spec!r}.")

    def torch_dtype(self, default: torch.dtype) -> torch.dtype:
        """The dtype of the unquantized modules (`default`, the super-network's, when `dtype` is null)."""
        return _dtype("dtype", self.dtype) or default

    def bnb_config(self, default_dtype: torch.dtype) -> Any:
        """The `transformers.BitsAndBytesConfig` of this method (None for `none`)."""
        if not self.enabled:
            return None
        check_bitsandbytes()
        from transformers import BitsAndBytesConfig

        if self.method == "int8":
            return BitsAndBytesConfig(
                load_in_8bit=True, llm_int8_threshold=self.threshold, llm_int8_skip_modules=list(self.skip_modules)
            )
        compute = _dtype("compute_dtype", self.compute_dtype) or self.torch_dtype(default_dtype)
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=compute,
            bnb_4bit_use_double_quant=self.double_quant,
            llm_int8_skip_modules=list(self.skip_modules),  # transformers reads the 4-bit skip list from here too
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"skip_modules": list(self.skip_modules)}


def check_bitsandbytes() -> None:
    """Raise a `QuantizationError` naming the fix when bitsandbytes cannot be used."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise QuantizationError(
            f"int8/nf4 quantization needs bitsandbytes (>= 0.45 for CPU support): pip install bitsandbytes ({exc}). "
            "Or run with quantization=none."
        ) from None
