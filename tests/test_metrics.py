"""Analytic cost: parameter counts equal real models'; sizes and FLOPs behave."""

from __future__ import annotations

import pytest
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

from nas import ModelShape, SubNetwork, sub_network_cost
from nas.supernet.elastic_model import make_elastic
from nas.supernet.metrics import flops_per_token

# A small GQA config (6 query heads in 2 KV groups) that every family builds the same way.
SMALL = dict(
    num_hidden_layers=3,
    hidden_size=48,
    intermediate_size=80,
    num_attention_heads=6,
    num_key_value_heads=2,
    vocab_size=100,
)


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("bias", [False, True])
def test_full_param_count_equals_hugging_face(tied, bias):
    config = LlamaConfig(**SMALL, tie_word_embeddings=tied, attention_bias=bias, mlp_bias=bias)
    shape = ModelShape.from_config(config)
    cost = sub_network_cost(shape, SubNetwork.full(shape))
    assert cost.params == LlamaForCausalLM(config).num_parameters()
    assert cost.params - cost.non_embedding_params == 100 * 48 * (1 if tied else 2)  # embedding (+ head)


@pytest.mark.parametrize(
    ("config_class", "model_class"), [(Qwen2Config, Qwen2ForCausalLM), (MistralConfig, MistralForCausalLM)]
)
def test_full_param_count_equals_hugging_face_for_qwen2_and_mistral(config_class, model_class):
    # Qwen2 has biases on q, k and v (not o) with no config flag saying so; Mistral has none.
    config = config_class(**SMALL, tie_word_embeddings=False)
    shape = ModelShape.from_config(config)
    model = model_class(config)
    assert sub_network_cost(shape, SubNetwork.full(shape)).params == model.num_parameters()
    assert make_elastic(model).shape == shape  # the config and the modules agree on the biases


def test_llama2_7b_size_matches_the_paper_scale():
    config = LlamaConfig(
        num_hidden_layers=32, hidden_size=4096, intermediate_size=11008, num_attention_heads=32, vocab_size=32000
    )
    shape = ModelShape.from_config(config)
    cost = sub_network_cost(shape, SubNetwork.full(shape))
    assert cost.params == 6_738_415_616  # LLaMA2-7B
    assert 13.4 < cost.size_gb("fp16") < 13.5
    assert cost.size_gb("int8") < 0.6 * cost.size_gb("fp16")


def test_smaller_sub_networks_cost_less():
    shape = ModelShape(4, 64, 128, 4, 2, 16, 258, True)
    full = SubNetwork.full(shape)
    cuts = [
        SubNetwork((0, 1, 2), (128,) * 3, (4,) * 3, 64),
        SubNetwork(tuple(range(4)), (64,) * 4, (4,) * 4, 64),
        SubNetwork(tuple(range(4)), (128,) * 4, (2,) * 4, 64),
        SubNetwork(tuple(range(4)), (128,) * 4, (4,) * 4, 32),
    ]
    for sub in cuts:
        assert sub_network_cost(shape, sub).params < sub_network_cost(shape, full).params
        assert flops_per_token(shape, sub) < flops_per_token(shape, full)
    # The head is counted: it does not shrink with depth.
    assert flops_per_token(shape, SubNetwork((0,), (1,), (2,), 64)) > 2 * 64 * 258
    assert flops_per_token(shape, full, seq_len=512) > flops_per_token(shape, full, seq_len=128)
