"""Linear layers whose weights are packed once for MKL's matrix product and reused over many batches.

On CPU, `F.linear` calls MKL's sgemm, which copies the weight into its blocked layout on every call. For the
evaluation's batches (a few hundred rows against SmolLM2-135M's 576 x 1536 projections, one thread) that copy is
about a tenth of the product: 1536 x 576 at 256 rows took 3.58 ms plain and 3.14 ms from a weight packed beforehand
(`cblas_sgemm_pack`, reached through torch's `mkl::_mkl_reorder_linear_weight` and `mkl::_mkl_linear`, the ops
Inductor's CPU freezing uses). The scored pass therefore runs one decoder layer over every batch of a chunk before
the next layer (`scored_pass.scored_hidden_chunk`), and packs that layer's projections on first use.

The packed product is MKL's same kernel without the per-call copy: for the shapes of SmolLM2-135M's MMLU batches (17
rows or more, inner dimension 576 or 1536) it gave the same bits as `F.linear`; fewer rows (`F.linear` then takes a
matrix-vector kernel, as for the last layer's few scored positions) and an inner dimension of 1024 round differently,
within float32 rounding. So log-likelihoods move in their last bits (MMLU, two sub-networks: 228/228 identical
per-item metrics against lm-eval, max |d loglik| 7.1e-05 where it was 6.9e-05). A packed weight takes about four
times the weight's memory (MKL's layout), so only one layer's packs are kept at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import torch
import torch.nn.functional as F
from torch import nn

from nas.supernet.elastic_modules import ElasticLinear


@cache
def mkl_packing_available() -> bool:
    """Whether this torch build has MKL's packed matrix product (x86 builds with MKL and oneDNN)."""
    if not (torch.backends.mkl.is_available() and torch.backends.mkldnn.is_available()):
        return False
    try:
        weight = torch.ones(4, 4)
        packed = torch.ops.mkl._mkl_reorder_linear_weight(weight, 2)
        return bool(torch.equal(torch.ops.mkl._mkl_linear(torch.ones(2, 4), packed, weight, None, 2), weight[:2] * 4))
    except (AttributeError, RuntimeError):
        return False


def packing_applies(parameter: torch.Tensor) -> bool:
    """Whether a model with this parameter's device and dtype gets packed weights now: float32 on CPU, where MKL
    packs, with no gradient being recorded (the packed product has no backward)."""
    on_cpu = parameter.device.type == "cpu" and parameter.dtype == torch.float32
    return on_cpu and not torch.is_grad_enabled() and mkl_packing_available()


@dataclass(frozen=True)
class _Packed:
    packed: torch.Tensor
    weight: torch.Tensor  # contiguous; MKL reads its shape (and falls back to it for another row count)
    bias: torch.Tensor | None
    in_features: int


class PackedLinears:
    """`linears(module, x)`: what `module(x)` returns, through the module's weight packed on its first call where
    that applies (plain and elastic `nn.Linear` with a float32 CPU weight and no hooks, while `enabled`); any other
    module (a quantised or adapter-wrapped linear) is called as it is. The packs live as long as this object."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._packed: dict[nn.Module, _Packed | None] = {}

    def __call__(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        entry = self._entry(module, x.shape[-1]) if self.enabled else None
        if entry is None:
            return module(x)
        rows = x.numel() // x.shape[-1]
        if rows == 0:
            return F.linear(x, entry.weight, entry.bias)
        return torch.ops.mkl._mkl_linear(x, entry.packed, entry.weight, entry.bias, rows)

    def _entry(self, module: nn.Module, in_features: int) -> _Packed | None:
        if module in self._packed:
            entry = self._packed[module]
            if entry is None or entry.in_features == in_features:
                return entry
        entry = self._packed[module] = _pack(module, in_features)
        return entry


def _hooked(module: nn.Module) -> bool:
    """Whether calling the module runs hooks (a probe, a profiler): then it is called, not bypassed."""
    return bool(
        module._forward_hooks
        or module._forward_pre_hooks
        or torch.nn.modules.module._global_forward_hooks
        or torch.nn.modules.module._global_forward_pre_hooks
    )


def _pack(module: nn.Module, in_features: int) -> _Packed | None:
    # Exact types: a subclass may compute something else in its forward (bitsandbytes' layers are nn.Linear's).
    if _hooked(module):
        return None
    if type(module) is ElasticLinear:
        weight, bias = module.active_parameters(in_features)
    elif type(module) is nn.Linear:
        weight, bias = module.weight, module.bias
    else:
        return None
    if weight.dtype != torch.float32 or weight.device.type != "cpu" or weight.shape[1] != in_features:
        return None
    weight = weight.contiguous()
    # The pack's row count is a hint: packs made for 1 to 4096 rows had one size and served any row count (measured;
    # the tests check 1 to 301 rows); `_mkl_linear` is called with the input's own, as its fast path requires.
    packed = torch.ops.mkl._mkl_reorder_linear_weight(weight, 256)
    return _Packed(packed, weight, None if bias is None else bias.contiguous(), in_features)
