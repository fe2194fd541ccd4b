"""SearchSpace: resolution against the model, counting, the flat encoding, sampling."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from transformers import LlamaConfig

from nas import SearchSpace, SubNetwork
from nas.errors import InvalidSubNetworkError, SearchSpaceError

CONF = Path(__file__).resolve().parents[1] / "conf" / "search_space"
LLAMA2_7B = LlamaConfig(
    num_hidden_layers=32,
    hidden_size=4096,
    intermediate_size=11008,
    num_attention_heads=32,
    num_key_value_heads=32,
    vocab_size=32000,
)
SMOLLM2 = LlamaConfig(
    num_hidden_layers=30,
    hidden_size=576,
    intermediate_size=1536,
    num_attention_heads=9,
    num_key_value_heads=3,
    vocab_size=49152,
    tie_word_embeddings=True,
)


def space(name: str, config) -> SearchSpace:
    return SearchSpace.from_config(OmegaConf.to_container(OmegaConf.load(CONF / f"{name}.yaml")), config)


def test_llama_nas_on_llama2_7b_matches_the_paper():
    s = space("llama_nas", LLAMA2_7B)
    assert s.choices["num_layers"] == (24, 28, 32)
    assert s.choices["mlp"] == (5504, 11008)
    size = s.size()
    assert size["encodings"] == 3 * 2**32  # about 1.3e10, LLaMA-NAS Table 1
    assert size["distinct"] == 2**24 + 2**28 + 2**32  # MLP choices of dropped layers do not matter


def test_relative_space_fits_a_different_model():
    s = space("llama_nas", SMOLLM2)
    assert s.choices["num_layers"] == (23, 26, 30)  # 22.5 rounds half up
    assert s.choices["mlp"] == (768, 1536)
    assert s.size()["encodings"] == 3 * 2**30


def test_klein_heads_are_whole_kv_groups():
    s = space("klein", SMOLLM2)
    assert s.choices["heads"] == (3, 6, 9)  # 3 KV groups of 3 query heads
    assert all(h % 8 == 0 for h in s.choices["hidden"])


@pytest.mark.parametrize("name", ["llama_nas", "klein", "mlp_only", "layers_only"])
def test_encode_decode_round_trip(name):
    s = space(name, SMOLLM2)
    rng = random.Random(0)
    for _ in range(20):
        sub = s.sample(rng)
        assert s.contains(sub)
        assert s.decode(s.encode(sub)) == sub
    params = s.parameters()
    assert s.decode({k: v[0] for k, v in params.items()}) == s.smallest()
    assert s.largest() == SubNetwork.full(s.shape)


def test_sampling_is_seeded():
    s = space("llama_nas", SMOLLM2)
    assert [s.sample(7) for _ in range(3)] == [s.sample(7)] * 3
    assert len({s.sample(seed) for seed in range(20)}) > 10


def test_layer_order_decides_which_layers_are_kept():
    s = SearchSpace.from_config(
        {"name": "t", "num_layers": {"choices": [0.5, 1.0]}}, SMOLLM2, layer_order=list(range(29, -1, -1))
    )
    assert s.smallest().layers == tuple(range(15, 30))


def test_sub_network_outside_the_space_is_named():
    s = space("llama_nas", SMOLLM2)
    with pytest.raises(InvalidSubNetworkError, match="allows \\[23, 26, 30\\]"):
        s.validate(SubNetwork(tuple(range(10)), (1536,) * 10, (9,) * 10, 576))
    with pytest.raises(InvalidSubNetworkError, match="mlp sizes \\[1000\\]"):
        s.validate(SubNetwork(tuple(range(30)), (1000,) * 30, (9,) * 30, 576))


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"mlp": {"choices": [0.5, 2.0]}}, "each must be in \\(0, 1\\]"),
        ({"mlp": {"choices": []}}, "choices is empty"),
        ({"mlp": {"choices": [4096], "relative": False}}, "above the model's 1536"),
        ({"mlp": {"choices": [0.5], "per_layr": True}}, "unknown keys \\['per_layr'\\]"),
        ({"depth": {"choices": [0.5]}}, "Unknown search_space keys \\['depth'\\]"),
        ({"num_layers": {"choices": [0.5], "per_layer": True}}, "cannot be per_layer"),
    ],
)
def test_bad_config_names_the_key(cfg, message):
    with pytest.raises(SearchSpaceError, match=message):
        SearchSpace.from_config(cfg, SMOLLM2)
