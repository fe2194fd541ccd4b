"""The vectorised views of index rows that LINAS uses equal the per-sub-network functions they replace, exactly:
predictor features, canonical encodings, parameters, sizes per dtype and FLOPs, on every search space of
conf/search_space/, an importance layer order, tied and untied heads, biased projections."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from nas.search.encoded_rows import EncodedRows
from nas.search.encoding import SearchEncoding
from nas.supernet.metrics import sub_network_cost
from nas.supernet.search_space import SearchSpace
from nas.supernet.subnetwork import ModelShape

CONF = Path(__file__).resolve().parents[1] / "conf" / "search_space"
SHAPES = {
    "smollm2": ModelShape(30, 576, 1536, 9, 3, 64, 49152, True),
    "tiny_biased_untied": ModelShape(4, 64, 128, 4, 2, 16, 258, False, ("self_attn.q_proj", "self_attn.k_proj")),
}


@pytest.mark.parametrize("shape_name", sorted(SHAPES))
@pytest.mark.parametrize("space_name", sorted(p.stem for p in CONF.glob("*.yaml")))
def test_row_views_equal_the_per_sub_network_functions(space_name, shape_name):
    shape = SHAPES[shape_name]
    cfg = OmegaConf.to_container(OmegaConf.load(CONF / f"{space_name}.yaml"), resolve=True)
    order = list(range(shape.num_layers))
    random.Random(1).shuffle(order)  # an importance order: k layers keep the first k of it
    dims = {d: cfg.get(d) for d in ("num_layers", "mlp", "heads", "hidden")}
    encoding = SearchEncoding(SearchSpace(shape, space_name, **dims, layer_order=order))
    rows = np.random.default_rng(0).integers(
        0, [len(c) for c in encoding.choices.values()], size=(300, len(encoding.choices))
    )
    subs = encoding.decode_rows(rows)
    encoded = EncodedRows(encoding)
    assert np.array_equal(encoded.features(rows), encoding.features(subs))
    assert np.array_equal(encoded.canonical(rows), encoding.index_matrix(subs))
    costs, expected = encoded.costs(rows, seq_len=96), [sub_network_cost(shape, s, 96) for s in subs]
    assert np.array_equal(costs.params, [c.params for c in expected])
    for dtype in expected[0].size_bytes:
        assert np.array_equal(costs.size_bytes[dtype], [c.size_bytes[dtype] for c in expected]), dtype
    assert np.array_equal(costs.flops_per_token, [c.flops_per_token for c in expected])
