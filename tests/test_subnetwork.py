"""SubNetwork: value semantics, serialisation and validation against the model's shape."""

from __future__ import annotations

import dataclasses
import json

import pytest

from nas import ModelShape, SubNetwork
from nas.errors import InvalidSubNetworkError

SHAPE = ModelShape(
    num_layers=4,
    hidden_size=64,
    intermediate_size=128,
    num_heads=4,
    num_kv_heads=2,
    head_dim=16,
    vocab_size=258,
    tie_word_embeddings=True,
)


def test_json_round_trip_and_hash():
    sub = SubNetwork([0, 2], [64, 128], [2, 4], 48)
    again = SubNetwork.from_json(sub.to_json())
    assert again == sub
    assert hash(again) == hash(sub)
    assert isinstance(again.layers, tuple)
    assert {sub: 1}[again] == 1
    # Every field, as lists, in the JSON (the mapping is written out, not derived from the fields).
    assert sub.to_dict() == {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(sub).items()}


def test_save_and_load(tmp_path):
    sub = SubNetwork((1, 3), (32, 32), (4, 4), 64)
    sub.save(tmp_path / "s.json")
    assert SubNetwork.load(tmp_path / "s.json") == sub


def test_load_missing_file_names_the_path(tmp_path):
    with pytest.raises(InvalidSubNetworkError, match="nope.json"):
        SubNetwork.load(tmp_path / "nope.json")


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(InvalidSubNetworkError, match="unexpected \\['depth'\\]"):
        SubNetwork.from_dict({"layers": [0], "mlp_sizes": [1], "num_heads": [2], "hidden_size": 8, "depth": 1})


def test_lengths_must_match():
    with pytest.raises(InvalidSubNetworkError, match="one MLP size and one head count per kept layer"):
        SubNetwork((0, 1), (64,), (2, 2), 64)


def test_full_is_valid_and_uniform():
    full = SubNetwork.full(SHAPE)
    assert full.validate(SHAPE) is full
    assert full.is_full(SHAPE) and full.is_uniform
    assert not SubNetwork((0, 1), (64, 128), (4, 4), 64).is_uniform


@pytest.mark.parametrize(
    ("sub", "message"),
    [
        (SubNetwork((), (), (), 64), "zero layers"),
        (SubNetwork(tuple(range(5)), (128,) * 5, (4,) * 5, 64), "keeps 5 layers but the model has 4"),
        (SubNetwork((0, 7), (128, 128), (4, 4), 64), "outside the model's layers 0..3"),
        (SubNetwork((2, 1), (128, 128), (4, 4), 64), "distinct and ascending"),
        (SubNetwork((0, 1), (128, 256), (4, 4), 64), r"mlp_sizes\[1\] \(layer 1\) = 256 is outside 1..128"),
        (
            SubNetwork((0, 1), (128, 128), (3, 4), 64),
            r"num_heads\[0\] \(layer 0\) = 3 is not a whole number of KV groups",
        ),
        (
            SubNetwork((0, 1), (128, 128), (4, 6), 64),
            r"num_heads\[1\] \(layer 1\) = 6 is above the model's 4 attention heads; the maximum is 4",
        ),
        (SubNetwork((0, 1), (128, 128), (4, 4), 65), "hidden_size = 65 is outside 1..64"),
    ],
)
def test_validation_names_the_field(sub, message):
    with pytest.raises(InvalidSubNetworkError, match=message):
        sub.validate(SHAPE)


def test_model_shape_round_trips_and_reads_records_with_bias_flags():
    from dataclasses import asdict

    from nas.supernet.subnetwork import ATTENTION_LINEARS

    biased = ModelShape(**{**asdict(SHAPE), "biased_linears": ATTENTION_LINEARS[:3]})
    assert ModelShape.from_dict(json.loads(json.dumps(asdict(biased)))) == biased
    legacy = {**asdict(SHAPE), "attention_bias": True, "mlp_bias": False}
    del legacy["biased_linears"]
    assert ModelShape.from_dict(legacy).biased_linears == ATTENTION_LINEARS
