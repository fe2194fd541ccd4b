"""Analytic cost of a sub-network: parameters, size in bytes, FLOPs per token. No forward pass needed."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from nas.supernet.slicing import LINEAR_MODULES, layer_slices
from nas.supernet.subnetwork import ModelShape, SubNetwork

# Bytes per parameter of the decoder's linear layers, and of everything else (embeddings, head, norms).
# INT8 follows LLaMA-NAS 4.4 / LLM.int8: linears in 8 bits, the rest in 16 bits.
BYTES_PER_PARAMETER = {"fp32": (4.0, 4.0), "fp16": (2.0, 2.0), "bf16": (2.0, 2.0), "int8": (1.0, 2.0)}
# LLM.int8 keeps one fp32 scale per output row of each quantized weight.
INT8_ROW_SCALE_BYTES = 4.0


@dataclass(frozen=True)
class SubNetworkCost:
    """Parameter counts, sizes and FLOPs of one sub-network."""

    params: int
    non_embedding_params: int
    linear_params: int
    size_bytes: dict[str, float]
    flops_per_token: float

    def size_gb(self, dtype: str = "fp16") -> float:
        return self.size_bytes[dtype] / 1e9

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class _LayerSums:
    """Sums over a sub-network's kept layers, from one look at each layer's slices."""

    linear_params: int  # weights of the decoder's linears
    bias_params: int  # one bias entry per kept output row of each biased linear
    linear_rows: int  # output rows of the decoder's linears (LLM.int8 keeps a scale per row)


def _layer_sums(shape: ModelShape, sub: SubNetwork) -> _LayerSums:
    linear = bias = rows = 0
    for pos in range(sub.num_layers):
        slices = layer_slices(shape, sub, pos)
        for name in LINEAR_MODULES:
            out, inputs = slices[name]
            linear += int(inputs or 0) * out
            rows += out
        bias += sum(slices[name][0] for name in shape.biased_linears)
    return _LayerSums(linear, bias, rows)


def _param_counts(shape: ModelShape, sub: SubNetwork, sums: _LayerSums) -> tuple[int, int, int]:
    d = sub.hidden_size
    non_embedding = sums.linear_params + sums.bias_params + 2 * d * sub.num_layers + d  # norms
    embedding = shape.vocab_size * d
    head = 0 if shape.tie_word_embeddings else shape.vocab_size * d
    return non_embedding + embedding + head, non_embedding, sums.linear_params


def _flops(shape: ModelShape, sub: SubNetwork, sums: _LayerSums, seq_len: int) -> float:
    matmul = sums.linear_params + sub.hidden_size * shape.vocab_size
    attention = sum(2 * h * shape.head_dim * (seq_len / 2) for h in sub.num_heads)
    return 2.0 * matmul + 2.0 * attention


def count_params(shape: ModelShape, sub: SubNetwork) -> tuple[int, int, int]:
    """(total, non-embedding, decoder-linear) parameter counts; a tied head is counted once."""
    return _param_counts(shape, sub, _layer_sums(shape, sub))


def flops_per_token(shape: ModelShape, sub: SubNetwork, seq_len: int = 128) -> float:
    """Forward FLOPs per token of a `seq_len`-token causal prefill, LM head included.

    2 FLOPs per multiply-accumulate of every linear (the head too: it never shrinks with depth and is a
    large share of a small model), plus attention scores and values over on average `seq_len / 2`
    earlier positions (causal).
    """
    return _flops(shape, sub, _layer_sums(shape, sub), seq_len)


def sub_network_cost(shape: ModelShape, sub: SubNetwork, seq_len: int = 128) -> SubNetworkCost:
    """Everything analytic about `sub`'s cost (each layer's slices looked at once: the search's worker and its
    analytic objectives ask for it every trial)."""
    sums = _layer_sums(shape, sub)
    total, non_embedding, linear = _param_counts(shape, sub, sums)
    sizes = {}
    for dtype, (linear_bytes, other_bytes) in BYTES_PER_PARAMETER.items():
        size = linear * linear_bytes + (total - linear) * other_bytes
        if dtype == "int8":
            size += sums.linear_rows * INT8_ROW_SCALE_BYTES
        sizes[dtype] = size
    return SubNetworkCost(
        params=total,
        non_embedding_params=non_embedding,
        linear_params=linear,
        size_bytes=sizes,
        flops_per_token=_flops(shape, sub, sums, seq_len),
    )
