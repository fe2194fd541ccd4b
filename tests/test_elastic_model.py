"""The elastic model: same function as the original when full, in-place slicing, autograd, generate."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import LlamaForCausalLM

from nas import SubNetwork, load_model
from nas.errors import InvalidSubNetworkError, UnsupportedModelError
from nas.supernet.elastic_model import make_elastic

HETERO = SubNetwork((1, 3), (32, 128), (4, 2), 48)  # layer 0 dropped, per-layer widths, fewer heads, narrower


def test_full_super_network_equals_the_original_model(tiny, tiny_inputs):
    model, _ = tiny
    plain = LlamaForCausalLM(model.config).eval()
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        expected = plain(**tiny_inputs).logits
        assert torch.equal(model(**tiny_inputs).logits, expected)
        with model.sub_network(SubNetwork.full(model.shape)):
            assert torch.equal(model(**tiny_inputs).logits, expected)


@pytest.mark.parametrize("architecture", ["qwen2", "mistral"])
def test_full_qwen2_and_mistral_super_networks_equal_the_original_models(architecture):
    from transformers import MistralForCausalLM, Qwen2ForCausalLM

    model, _ = load_model("tiny_llama", architecture=architecture, sliding_window=4)
    original_class = {"qwen2": Qwen2ForCausalLM, "mistral": MistralForCausalLM}[architecture]
    plain = original_class(model.config).eval()
    plain.load_state_dict(model.state_dict())
    ids = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = plain(ids).logits
        assert torch.equal(model(ids).logits, expected)
        with model.sub_network(SubNetwork.full(model.shape)):
            assert torch.equal(model(ids).logits, expected)
    assert isinstance(model, original_class)


def test_sub_network_orders_layer_types_as_run_and_saving_keeps_the_models_own(tmp_path):
    # Qwen2 picks each layer's mask by its position in the run; the model's own order is what is saved.
    model, _ = load_model("tiny_llama", architecture="qwen2", sliding_window=4)
    own = ["full_attention", "full_attention", "sliding_attention", "sliding_attention"]
    assert model.config.layer_types == own
    with model.sub_network(HETERO):  # layers 1 and 3
        assert model.config.layer_types[:2] == ["full_attention", "sliding_attention"]
        model.save_pretrained(tmp_path)
    assert model.config.layer_types == own
    assert json.loads((tmp_path / "config.json").read_text())["layer_types"] == own


def test_module_names_and_parameters_are_kept(tiny):
    model, _ = tiny
    names = [n for n, _ in model.named_parameters()]
    assert "model.layers.0.self_attn.q_proj.weight" in names
    before = {n: p.data_ptr() for n, p in model.named_parameters()}
    with model.sub_network(HETERO):
        # Still a Hugging Face Llama; no parameter was copied, replaced or hidden.
        assert isinstance(model, LlamaForCausalLM)
        assert {n: p.data_ptr() for n, p in model.named_parameters()} == before
        assert set(model.state_dict()) >= set(before)


def test_sub_network_changes_the_output_and_context_restores(tiny, tiny_inputs):
    model, _ = tiny
    with torch.no_grad():
        full = model(**tiny_inputs).logits
        with model.sub_network(HETERO) as active:
            assert model.active_sub_network == active == HETERO
            sub = model(**tiny_inputs).logits
            inner = SubNetwork((0, 1), (64, 64), (2, 2), 64)
            with model.sub_network(inner):
                assert model.active_sub_network == inner
            assert model.active_sub_network == HETERO
            assert torch.equal(model(**tiny_inputs).logits, sub)
        assert model.active_sub_network is None
        assert torch.equal(model(**tiny_inputs).logits, full)
    assert not torch.allclose(sub, full, atol=1e-3)


def test_dropped_layers_are_not_run(tiny, tiny_inputs):
    model, _ = tiny
    calls: list[int] = []
    hooks = [
        layer.register_forward_hook(lambda m, i, o, k=k: calls.append(k)) for k, layer in enumerate(model.model.layers)
    ]
    try:
        with torch.no_grad(), model.sub_network(HETERO):
            model(**tiny_inputs)
    finally:
        for h in hooks:
            h.remove()
    assert calls == [1, 3]


def test_gradients_reach_only_the_active_slices(tiny, tiny_inputs):
    model, _ = tiny
    model.zero_grad(set_to_none=True)
    with model.sub_network(HETERO):
        model(**tiny_inputs, labels=tiny_inputs["input_ids"]).loss.backward()
    layers = model.model.layers
    assert all(p.grad is None for p in layers[0].parameters())  # dropped layer
    gate = layers[1].mlp.gate_proj.weight.grad  # 32 of 128 rows, 48 of 64 columns active
    assert gate[:32, :48].abs().sum() > 0
    assert gate[32:].abs().sum() == 0 and gate[:, 48:].abs().sum() == 0
    k_grad = layers[3].self_attn.k_proj.weight.grad  # 2 heads = 1 KV group of 16 dims
    assert k_grad[:16].abs().sum() > 0 and k_grad[16:].abs().sum() == 0
    embed = model.model.embed_tokens.weight.grad
    assert embed[:, 48:].abs().sum() == 0
    model.zero_grad(set_to_none=True)


def test_invalid_sub_network_is_rejected_before_any_change(tiny):
    model, _ = tiny
    with pytest.raises(InvalidSubNetworkError, match="not a whole number of KV groups"):
        model.set_sub_network(SubNetwork((0,), (128,), (3,), 64))
    assert model.active_sub_network is None


def test_kv_cache_with_dropped_first_layer(tiny):
    model, tokenizer = tiny
    ids = tokenizer(["Once upon a time"], return_tensors="pt").input_ids
    with torch.no_grad(), model.sub_network(HETERO):
        generated = model.generate(ids, max_new_tokens=6, do_sample=False)
        # Incremental decoding through the KV cache (positions taken from the cache's length) must give
        # the logits of one forward pass over the whole sequence.
        out = model(ids, use_cache=True)
        step_logits = [out.logits[:, -1]]
        for token in generated[:, ids.shape[1] : -1].T:
            out = model(token[:, None], cache=out.cache, use_cache=True)
            step_logits.append(out.logits[:, -1])
        whole = model(generated, use_cache=False).logits[:, ids.shape[1] - 1 : -1]
    torch.testing.assert_close(torch.stack(step_logits, dim=1), whole, atol=1e-5, rtol=1e-5)
    assert torch.equal(whole.argmax(-1), generated[:, ids.shape[1] :])


def test_unsupported_architecture_gets_a_clear_error():
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=32))
    with pytest.raises(UnsupportedModelError, match="GPT2LMHeadModel is not supported.*LlamaForCausalLM"):
        make_elastic(gpt2)


def test_switching_straight_between_sub_networks_equals_a_fresh_model(tiny_inputs):
    """A switch reuses the targets and plans it worked out before; nothing of the previous one lingers."""
    wide = SubNetwork((0, 2, 3), (128, 32, 96), (4, 2, 4), 64)
    used, _ = load_model("tiny_llama")
    fresh, _ = load_model("tiny_llama")
    with torch.no_grad():
        for sub in (HETERO, wide, HETERO, SubNetwork.full(used.shape), wide):
            used.set_sub_network(sub)  # no reset in between
            with fresh.sub_network(sub):
                expected = fresh(**tiny_inputs).logits
            fresh.reset_super_network()
            assert torch.equal(used(**tiny_inputs).logits, expected)


def test_switching_reaches_the_layers_through_wrappers(tiny_inputs):
    """FSDP units and activation checkpointing wrap each decoder layer; a switch still slices inside them."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    wrapped, _ = load_model("tiny_llama")
    plain, _ = load_model("tiny_llama")
    with wrapped.sub_network(HETERO):  # worked out before the wrapping, as when a strategy wraps at setup
        pass
    for i in range(len(wrapped.model.layers)):
        wrapped.model.layers[i] = checkpoint_wrapper(wrapped.model.layers[i])
    calls: list[int] = []
    for k, layer in enumerate(wrapped.model.layers):
        layer.register_forward_hook(lambda m, i, o, k=k: calls.append(k))  # on the wrappers
    with torch.no_grad(), wrapped.sub_network(HETERO), plain.sub_network(HETERO):
        assert torch.equal(wrapped(**tiny_inputs).logits, plain(**tiny_inputs).logits)
    assert calls == [1, 3]  # the kept layers ran through their wrappers
