"""N:M semi-structured sparsity of the decoder linears (2:4 in Klein et al., Table 1): in every group of M
consecutive weights along a row's input dimension, N are zero. Three ways to choose them:

- Magnitude: the N smallest |W|.
- Wanda (Sun et al. 2024): the N smallest |W_ij| * ||X_j||, the weight times the norm of its input
  feature over the calibration tokens, compared within each row's group.
- SparseGPT (Frantar and Alistarh 2023): layer-wise optimal brain surgeon. With H = X X^T (plus 1% of its
  mean diagonal as damping) and U the upper Cholesky factor of H^-1, columns are visited in order; at
  the first column of each group the N weights with the smallest w^2 / U_jj^2 are chosen, and every
  pruned weight's error (w - 0) / U_jj is pushed onto the columns not yet visited through U's row, so
  the layer's output on the calibration inputs changes as little as possible.

Wanda and SparseGPT prune layer by layer on the inputs each layer sees with the layers before it already
pruned (`LayerwiseRunner`), as their authors do. The model keeps its architecture; pruned weights are zeros.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, cast

import torch
from torch import nn

from nas.baselines.base import Baseline, BaselineError, Pruned
from nas.baselines.layerwise import DECODER_LINEARS, LayerwiseRunner
from nas.errors import NASError
from nas.supernet.elastic_model import shape_of
from nas.supernet.metrics import sub_network_cost
from nas.supernet.subnetwork import SubNetwork


class SparsityPatternError(NASError, ValueError):
    """A sparsity ratio that N:M semi-structured pruning cannot give."""


def pattern_of(ratio: float, group: int = 4) -> int:
    """N, the zeros per group of `group` weights, for a target sparsity `ratio` (0, 0.25, 0.5 or 0.75 for M=4)."""
    zeros = ratio * group
    if not 0 <= ratio < 1 or abs(zeros - round(zeros)) > 1e-9:
        allowed = ", ".join(f"{n / group:g}" for n in range(group))
        raise SparsityPatternError(
            f"ratio={ratio}: {group}-wide semi-structured sparsity zeroes a whole number of weights per group of "
            f"{group}, so the ratio must be one of {allowed} (0.5 is 2:4)."
        )
    return round(zeros)


def nm_mask(scores: torch.Tensor, zeros: int, group: int = 4) -> torch.Tensor:
    """True where a weight is pruned: the `zeros` lowest scores in each group of `group` along dim 1."""
    rows, cols = scores.shape
    if cols % group:
        raise SparsityPatternError(f"A layer with {cols} inputs cannot be split in groups of {group}.")
    mask = torch.zeros_like(scores, dtype=torch.bool)
    if zeros == 0:
        return mask
    grouped = scores.reshape(rows, cols // group, group)
    lowest = torch.topk(grouped, zeros, dim=-1, largest=False).indices
    return mask.reshape(rows, cols // group, group).scatter_(-1, lowest, True).reshape(rows, cols)


@torch.no_grad()
def magnitude_prune_(linear: nn.Linear, zeros: int, group: int = 4) -> None:
    linear.weight[nm_mask(linear.weight.abs().float(), zeros, group)] = 0


@torch.no_grad()
def wanda_prune_(linear: nn.Linear, input_sq_norms: torch.Tensor, zeros: int, group: int = 4) -> None:
    """`input_sq_norms[j]`: the sum over calibration tokens of input feature j squared."""
    scores = linear.weight.abs().float() * input_sq_norms.float().sqrt().to(linear.weight.device).unsqueeze(0)
    linear.weight[nm_mask(scores, zeros, group)] = 0


@torch.no_grad()
def sparsegpt_prune_(
    linear: nn.Linear, hessian: torch.Tensor, zeros: int, group: int = 4, damping: float = 0.01, block: int = 128
) -> None:
    """Prune `linear` to N:M by SparseGPT with `hessian` = sum of x x^T over its calibration inputs."""
    weight = linear.weight.detach().float().clone()
    rows, cols = weight.shape
    h = hessian.detach().double().clone()
    dead = torch.diag(h) == 0  # an input that never fired: its weights cannot matter
    h[dead, dead] = 1
    weight[:, dead] = 0
    h += damping * torch.mean(torch.diag(h)) * torch.eye(cols, dtype=h.dtype, device=h.device)
    upper = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True).float()
    for start in range(0, cols, block):
        end = min(start + block, cols)
        w = weight[:, start:end].clone()
        u = upper[start:end, start:end]
        errors = torch.zeros_like(w)
        mask = torch.zeros_like(w, dtype=torch.bool)
        for i in range(end - start):
            if i % group == 0 and zeros:
                span = slice(i, i + group)
                scores = w[:, span] ** 2 / torch.diag(u)[span].unsqueeze(0) ** 2
                mask[:, span] = nm_mask(scores, zeros, group)
            column = w[:, i]
            kept = torch.where(mask[:, i], torch.zeros_like(column), column)
            error = (column - kept) / u[i, i]
            w[:, i:] -= error.unsqueeze(1) * u[i, i:].unsqueeze(0)
            w[:, i] = kept
            errors[:, i] = error
        weight[:, start:end] = w
        weight[:, end:] -= errors @ upper[start:end, end:]
    linear.weight.copy_(weight.to(linear.weight.dtype))


def _sum_of_squares(target: dict[str, torch.Tensor], name: str) -> Callable[[torch.Tensor], None]:
    def add(x: torch.Tensor) -> None:
        flat = x.reshape(-1, x.shape[-1]).float()
        target[name] = target.get(name, 0) + (flat**2).sum(dim=0)  # type: ignore[operator]

    return add


def _outer_products(target: dict[str, torch.Tensor], name: str) -> Callable[[torch.Tensor], None]:
    def add(x: torch.Tensor) -> None:
        flat = x.reshape(-1, x.shape[-1]).double()
        target[name] = target.get(name, 0) + flat.T @ flat  # type: ignore[operator]

    return add


def prune_semi_structured(
    model: nn.Module,
    method: str,
    ratio: float,
    batches: list[torch.Tensor] | None = None,
    group: int = 4,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Prune every decoder linear of `model` in place to N:M sparsity by `method` (magnitude, wanda,
    sparsegpt); the last two need calibration `batches`."""
    zeros = pattern_of(ratio, group)
    layers = list(model.model.layers)  # type: ignore[union-attr, arg-type]
    if method == "magnitude":
        for index, layer in enumerate(layers):
            for name in DECODER_LINEARS:
                magnitude_prune_(cast(nn.Linear, layer.get_submodule(name)), zeros, group)
            if progress:
                progress(index + 1, len(layers))
        return
    if method not in ("wanda", "sparsegpt"):
        raise NASError(f"Unknown semi-structured method {method!r}; use magnitude, wanda or sparsegpt.")
    if not batches:
        raise NASError(f"{method} needs calibration batches.")
    runner = LayerwiseRunner(model, batches)
    collect = _sum_of_squares if method == "wanda" else _outer_products
    for index, layer in runner.layers():
        stats: dict[str, torch.Tensor] = {}
        runner.collect(layer, {name: collect(stats, name) for name in DECODER_LINEARS})
        for name in DECODER_LINEARS:
            linear = cast(nn.Linear, layer.get_submodule(name))
            if method == "wanda":
                wanda_prune_(linear, stats[name], zeros, group)
            else:
                sparsegpt_prune_(linear, stats[name], zeros, group)
        if progress:
            progress(index + 1, len(layers))


def sparsity(linear: nn.Linear) -> float:
    """The fraction of zero weights."""
    return float((linear.weight == 0).float().mean())


def compressed_bytes(values: int, zeros: int, group: int, bytes_per_value: float) -> int:
    """Bytes of `values` weights stored N:M-compressed: the kept values, plus log2(M) bits of index per
    kept value (NVIDIA's 2:4 format: 2 bits each)."""
    kept = values * (group - zeros) / group
    index_bits = math.ceil(math.log2(group)) if zeros else 0
    return int(kept * bytes_per_value + kept * index_bits / 8)


class SemiStructured(Baseline):
    """N:M semi-structured sparsity of the decoder linears by `method`; `ratio` is the sparsity (0.5: 2:4).

    The model keeps its dense architecture (zeros stored): it is measured as it is, and sized both dense and
    as it would be stored in the N:M sparse format (`compressed_bytes`), the two points Klein et al. plot.
    """

    method = "magnitude"
    group = 4
    ratio_meaning = "sparsity of the decoder linears (0.5: 2 zeros in every 4 weights)"

    def __init__(self, name: str | None = None) -> None:
        self.name = name or f"{self.method}_2_4"
        self.needs_calibration = self.method != "magnitude"

    def check(self, ratio: float, shape: Any | None = None) -> None:
        super().check(ratio, shape)
        try:
            pattern_of(ratio, self.group)
        except SparsityPatternError as exc:
            raise BaselineError(f"{self.name}: {exc}") from None

    def prune(self, model: Any, tokenizer: Any, calibration: list[Any] | None, ratio: float) -> Pruned:
        started = time.perf_counter()
        prune_semi_structured(model, self.method, ratio, calibration, self.group)
        shape = shape_of(model)
        full = sub_network_cost(shape, SubNetwork.full(shape))
        zeros = pattern_of(ratio, self.group)
        pruned_weights = full.linear_params * zeros // self.group
        dense = {k: int(v) for k, v in full.size_bytes.items()}
        per_value = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "int8": 1.0}
        compressed = {
            dtype: dense[dtype]
            - int(full.linear_params * per_value[dtype])
            + compressed_bytes(full.linear_params, zeros, self.group, per_value[dtype])
            for dtype in dense
        }
        layers = list(model.model.layers)
        measured = sum(sparsity(cast(nn.Linear, layer.get_submodule(n))) for layer in layers for n in DECODER_LINEARS)
        return Pruned(
            method=self.name,
            ratio=ratio,
            model=model,
            sub=None,
            params=full.params - pruned_weights,
            size_bytes=dense,
            compressed_bytes=compressed,
            flops_per_token=full.flops_per_token,  # dense kernels: zeros are still multiplied
            seconds=time.perf_counter() - started,
            details={
                "pattern": f"{zeros}:{self.group}",
                "dense_params": full.params,
                "measured_sparsity": measured / (len(layers) * len(DECODER_LINEARS)),
            },
        )


class Magnitude(SemiStructured):
    method = "magnitude"


class Wanda(SemiStructured):
    method = "wanda"


class SparseGpt(SemiStructured):
    method = "sparsegpt"
