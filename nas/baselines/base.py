"""What every pruning baseline is and gives: `Baseline.prune(model, tokenizer, calibration, ratio)` turns a
copy of the model into a `Pruned` model, which the search's scorer measures like a sub-network and which
saves as a standalone folder `AutoModelForCausalLM.from_pretrained` loads.

Structured methods that keep the Llama architecture (layer drop, the importance width cut, LLM-Pruner)
produce a `SubNetwork` of a (possibly permuted) copy of the model, so they are exported exactly like
searched sub-networks. SliceGPT produces a model of its own architecture; N:M methods keep the
architecture and zero weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nas.errors import NASError
from nas.supernet.subnetwork import SubNetwork


class BaselineError(NASError, ValueError):
    """A baseline setting that cannot work (unknown method, a ratio the method cannot reach on this model)."""


@dataclass
class Pruned:
    """A pruned model, ready to be measured and saved.

    Attributes:
        method: the baseline's name (`llm_pruner`, `slicegpt`, `wanda_2_4`, ...).
        ratio: the method's own ratio (see each method).
        model: the model to measure: the elastic copy (with `sub` to activate) or a standalone model.
        sub: the sub-network of `model` that the method keeps, or None when the whole `model` is the result.
        params: parameters the pruned model stores (non-zero ones for N:M sparsity).
        size_bytes: bytes per storage dtype of those parameters (`fp32`, `fp16`, `bf16`, `int8`), dense.
        compressed_bytes: for N:M sparsity, bytes per dtype in the sparse format (kept values and indices).
        flops_per_token: multiply-adds x2 per token at the scorer's context length (dense kernels).
        seconds: time the pruning took (calibration included).
        details: method-specific facts (sparsity, layers dropped, slicing dims, ...).
    """

    method: str
    ratio: float
    model: Any
    sub: SubNetwork | None
    params: int
    size_bytes: dict[str, int]
    flops_per_token: float
    seconds: float = 0.0
    compressed_bytes: dict[str, int] | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "ratio": self.ratio,
            "params": self.params,
            "size_bytes": self.size_bytes,
            "compressed_bytes": self.compressed_bytes,
            "flops_per_token": self.flops_per_token,
            "seconds": self.seconds,
            "sub_network": self.sub.to_dict() if self.sub is not None else None,
            **self.details,
        }


class Baseline:
    """One pruning method. Subclasses set `name`, `needs_calibration`, and implement `check` (cheap, before
    any model loads) and `prune`.

    Args:
        ratio_meaning: shown in errors and reports (what `ratio` removes).
    """

    name = "baseline"
    needs_calibration = True
    supports_recovery = False  # recovery.method=lora fine-tunes its pruned models too (LLM-Pruner, SliceGPT)
    ratio_meaning = "fraction removed"

    def check(self, ratio: float, shape: Any | None = None) -> None:
        """Raise `BaselineError` naming the fix when `ratio` is out of range or, given the model's shape,
        cannot be reached; called before calibration."""
        if not 0 <= ratio < 1:
            raise BaselineError(f"{self.name}: ratio={ratio} is outside [0, 1); it is the {self.ratio_meaning}.")

    def prune(self, model: Any, tokenizer: Any, calibration: list[Any] | None, ratio: float) -> Pruned:
        raise NotImplementedError
