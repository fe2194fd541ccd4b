"""Sub-networks as rows of choice indices, computed on whole matrices at once.

LINAS scores about ten thousand candidates per round; decoding each into a `SubNetwork` and costing it in
Python took most of a round. Here the same quantities (the predictors' features, parameters, sizes per
dtype, FLOPs per token, the canonical encoding) come from index matrices with numpy, equal to the per-sub-network
functions they replace (`SearchEncoding.features`, `sub_network_cost`, `SearchEncoding.encode`); a test holds
them to that.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from nas.search.encoding import SearchEncoding
from nas.supernet.metrics import BYTES_PER_PARAMETER, INT8_ROW_SCALE_BYTES


class RowCosts:
    """Analytic costs of n sub-networks (arrays of n): parameters, bytes per dtype and FLOPs per token, as
    `sub_network_cost` computes them. Each is worked out when first read: LINAS's inner search needs one or two of
    them for every candidate it scores, and the others would double the work."""

    def __init__(self, encoded: EncodedRows, rows: np.ndarray, seq_len: int) -> None:
        self._encoded, self._rows, self._seq_len = encoded, rows, seq_len

    @cached_property
    def _layers(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per row and layer: kept, and each kept layer's query / key-value / MLP widths; the hidden size [n, 1]."""
        encoded, rows, s = self._encoded, self._rows, self._encoded.shape
        heads = encoded._per_layer(rows, "heads")
        return (
            encoded.kept(rows),
            encoded._values(rows, "hidden")[:, None],
            heads * s.head_dim,
            heads // s.group_size * s.head_dim,
            encoded._per_layer(rows, "mlp"),
        )

    @cached_property
    def _linear(self) -> np.ndarray:
        """Decoder linear parameters, in integers (exact): q, k, v, gate and up read d inputs, o reads q, down m."""
        kept, d, q, kv, m = self._layers
        return np.where(kept, d * (2 * q + 2 * kv + 3 * m), 0).sum(axis=1)

    @cached_property
    def _total(self) -> np.ndarray:
        s = self._encoded.shape
        kept, d, q, kv, m = self._layers
        outputs = {  # rows (outputs) of each decoder linear
            "self_attn.q_proj": q,
            "self_attn.k_proj": kv,
            "self_attn.v_proj": kv,
            "self_attn.o_proj": d,
            "mlp.gate_proj": m,
            "mlp.up_proj": m,
            "mlp.down_proj": d,
        }
        bias = sum(np.where(kept, outputs[n], 0).sum(axis=1) for n in s.biased_linears)
        hidden = d[:, 0]
        other = bias + 2 * hidden * kept.sum(axis=1) + hidden
        embedding = s.vocab_size * hidden
        head = 0 if s.tie_word_embeddings else s.vocab_size * hidden
        return self._linear + other + embedding + head

    @cached_property
    def params(self) -> np.ndarray:
        return self._total.astype(np.int64)

    @cached_property
    def size_bytes(self) -> dict[str, np.ndarray]:
        kept, d, q, kv, m = self._layers
        linear, total = self._linear, self._total
        sizes = {}
        for dtype, (linear_bytes, other_bytes) in BYTES_PER_PARAMETER.items():
            size = linear * linear_bytes + (total - linear) * other_bytes
            if dtype == "int8":
                out_rows = np.where(kept, q + 2 * kv + 2 * m + 2 * d, 0).sum(axis=1)
                size = size + out_rows * INT8_ROW_SCALE_BYTES
            sizes[dtype] = size.astype(np.float64)
        return sizes

    @cached_property
    def flops_per_token(self) -> np.ndarray:
        s = self._encoded.shape
        kept, d, q = self._layers[:3]
        attention = np.where(kept, 2 * q * (self._seq_len / 2), 0.0).sum(axis=1)
        return 2.0 * (self._linear + d[:, 0] * s.vocab_size) + 2.0 * attention


class EncodedRows:
    """Vectorised views of one `SearchEncoding`'s index rows ([n, parameters], columns in `encoding.names`)."""

    def __init__(self, encoding: SearchEncoding) -> None:
        space = encoding.space
        self.encoding = encoding
        self.shape = space.shape
        names = encoding.names
        layers = self.shape.num_layers
        self._rank = np.empty(layers, dtype=np.int64)
        self._rank[np.array(space.layer_order)] = np.arange(layers)
        self._columns: dict[str, np.ndarray | int | None] = {}
        self._choices: dict[str, np.ndarray] = {}
        for dim in ("num_layers", "mlp", "heads", "hidden"):
            self._choices[dim] = np.array(space.choices[dim], dtype=np.int64)
            if f"{dim}_0" in names:  # per layer
                self._columns[dim] = np.array([names.index(f"{dim}_{i}") for i in range(layers)])
            else:
                self._columns[dim] = names.index(dim) if dim in names else None
        self._per_layer_columns = np.concatenate(
            [c for c in (self._columns["mlp"], self._columns["heads"]) if isinstance(c, np.ndarray)] or [np.zeros(0)]
        ).astype(np.int64)
        # The largest index of each column (`names` order): the bounds of the space's index rows.
        self.largest = np.array([len(encoding.choices[n]) - 1 for n in names], dtype=np.int64)

    def _values(self, rows: np.ndarray, dim: str) -> np.ndarray:
        """The chosen sizes of `dim`: [n] for shared dimensions, [n, layers] for per-layer ones."""
        column, choices = self._columns[dim], self._choices[dim]
        if column is None:
            return np.full(len(rows), choices[0], dtype=np.int64)
        return choices[rows[:, column]]

    def _per_layer(self, rows: np.ndarray, dim: str) -> np.ndarray:
        values = self._values(rows, dim)
        return values if values.ndim == 2 else np.repeat(values[:, None], self.shape.num_layers, axis=1)

    def kept(self, rows: np.ndarray) -> np.ndarray:
        """[n, layers]: whether each layer is kept (a sub-network of k layers keeps the first k of the layer order)."""
        return self._rank[None, :] < self._values(rows, "num_layers")[:, None]

    def features(self, rows: np.ndarray) -> np.ndarray:
        """The predictors' inputs, as `SearchEncoding.features` computes them."""
        s = self.shape
        kept = self.kept(rows)
        mlp = np.where(kept, self._per_layer(rows, "mlp") / s.intermediate_size, 0.0)
        heads = np.where(kept, self._per_layer(rows, "heads") / s.num_heads, 0.0)
        extra = np.stack(
            [self._values(rows, "num_layers") / s.num_layers, self._values(rows, "hidden") / s.hidden_size], axis=1
        )
        return np.hstack([mlp, heads, extra])

    def canonical(self, rows: np.ndarray) -> np.ndarray:
        """Rows as `SearchEncoding.encode` writes them: per-layer choices of dropped layers at their largest."""
        out = rows.copy()
        if not len(self._per_layer_columns):
            return out
        dropped = ~self.kept(rows)
        layers = self.shape.num_layers
        for start in range(0, len(self._per_layer_columns), layers):
            columns = self._per_layer_columns[start : start + layers]
            out[:, columns] = np.where(dropped, self.largest[columns][None, :], rows[:, columns])
        return out

    def costs(self, rows: np.ndarray, seq_len: int = 128) -> RowCosts:
        """Parameters, bytes per dtype and FLOPs per token, as `sub_network_cost` computes them (each when read)."""
        return RowCosts(self, rows, seq_len)
