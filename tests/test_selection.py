"""Choosing a sub-network by name: full, largest, smallest, random:<seed>, a JSON file; clear errors otherwise."""

from __future__ import annotations

import pytest

from nas import ModelShape, SearchSpace, SubNetwork
from nas.errors import InvalidSubNetworkError
from nas.supernet.named import check_spec, select_sub_network

SHAPE = ModelShape(
    num_layers=4, hidden_size=64, intermediate_size=128, num_heads=4, num_kv_heads=2, head_dim=16,
    vocab_size=258, tie_word_embeddings=True,
)  # fmt: skip
SPACE = SearchSpace.from_config(
    {"name": "t", "num_layers": {"choices": [0.5, 1.0]}, "mlp": {"choices": [0.5, 1.0], "per_layer": True}}, SHAPE
)


def test_named_forms():
    assert select_sub_network("full", SPACE) == SubNetwork.full(SHAPE)
    assert select_sub_network("largest", SPACE) == SPACE.largest()
    assert select_sub_network(" smallest ", SPACE) == SPACE.smallest() != SPACE.largest()
    assert select_sub_network("random:7", SPACE) == SPACE.sample(7)
    assert len({select_sub_network(f"random:{seed}", SPACE) for seed in range(20)}) > 1


def test_json_file_may_hold_any_sub_network_the_model_runs(tmp_path):
    outside_space = SubNetwork(layers=(1, 3), mlp_sizes=(32, 96), num_heads=(2, 4), hidden_size=64)
    path = tmp_path / "arch.json"
    outside_space.save(path)
    assert select_sub_network(str(path), SPACE) == outside_space
    too_wide = SubNetwork(layers=(0,), mlp_sizes=(256,), num_heads=(4,), hidden_size=64)
    too_wide.save(path)
    with pytest.raises(InvalidSubNetworkError, match="intermediate_size"):
        select_sub_network(str(path), SPACE)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            "biggest",
            r"Unknown sub-network 'biggest'; use full, largest, smallest, random:<seed> \(e\.g\. random:3\), or the path",
        ),
        ("random:", "the seed '' is not an integer"),
        ("random:1.5", "the seed '1.5' is not an integer"),
        ("missing/arch.json", "missing/arch.json does not exist"),
    ],
)
def test_bad_specs_are_clear_errors(spec, message):
    with pytest.raises(InvalidSubNetworkError, match=message):
        check_spec(spec)
    with pytest.raises(InvalidSubNetworkError, match=message):
        select_sub_network(spec, SPACE)
