"""LoRA adapters are sliced with the weights: merged and unmerged sub-networks agree; only adapters train."""

from __future__ import annotations

import torch

from nas import SubNetwork, load_model
from nas.training.lora import apply_lora, has_lora, merge_lora

SUB = SubNetwork((1, 3), (32, 128), (4, 2), 48)  # layer 0 dropped, narrower everything


def lora_model():
    model, tokenizer = load_model("tiny_llama", tie_word_embeddings=False, seed=2)
    apply_lora(model, r=4, alpha=8)
    torch.manual_seed(0)
    with torch.no_grad():  # PEFT starts B at zero; make the adapters do something
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    return model, tokenizer


def test_sliced_adapters_equal_the_merged_weights():
    model, tokenizer = lora_model()
    ids = tokenizer(["LoRA slices too"], return_tensors="pt").input_ids
    with torch.no_grad(), model.sub_network(SUB):
        unmerged_sub = model(ids).logits
    with torch.no_grad():
        unmerged_full = model(ids).logits
    assert has_lora(model) and hasattr(model.lm_head, "lora_A")  # untied: the head has an adapter too
    merge_lora(model)
    assert not has_lora(model)
    with torch.no_grad(), model.sub_network(SUB):
        torch.testing.assert_close(model(ids).logits, unmerged_sub, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, unmerged_full, atol=1e-5, rtol=1e-5)


def test_adapters_added_after_a_switch_are_sliced_too():
    """The switch's resolved modules are rebuilt when PEFT wraps the projections (and when merging unwraps)."""
    switched, tokenizer = load_model("tiny_llama", tie_word_embeddings=False, seed=2)
    with switched.sub_network(SUB):  # resolves the unwrapped projections
        pass
    apply_lora(switched, r=4, alpha=8)
    reference, _ = lora_model()
    with torch.no_grad():
        for name, param in switched.named_parameters():  # the same adapter weights
            param.copy_(reference.get_parameter(name))
    ids = tokenizer(["LoRA slices too"], return_tensors="pt").input_ids
    with torch.no_grad():
        with reference.sub_network(SUB):
            expected = reference(ids).logits
        with switched.sub_network(SUB):
            assert torch.equal(switched(ids).logits, expected)
        assert switched.model.layers[1].mlp.up_proj.lora_B["default"].active_out_features is None  # reset too
        merge_lora(switched)
        with switched.sub_network(SUB):
            torch.testing.assert_close(switched(ids).logits, expected, atol=1e-5, rtol=1e-5)


def test_only_active_adapter_slices_train():
    model, tokenizer = lora_model()
    ids = tokenizer(["gradients"], return_tensors="pt").input_ids
    with model.sub_network(SUB):
        model(ids, labels=ids).loss.backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    layers = model.model.layers
    assert all(p.grad is None for p in layers[0].parameters())  # dropped layer: adapters not run
    b = layers[1].mlp.up_proj.lora_B["default"].weight.grad  # 32 of 128 output rows active
    a = layers[1].mlp.up_proj.lora_A["default"].weight.grad  # 48 of 64 input columns active
    assert b[:32].abs().sum() > 0 and b[32:].abs().sum() == 0
    assert a[:, :48].abs().sum() > 0 and a[:, 48:].abs().sum() == 0
    assert layers[1].mlp.up_proj.base_layer.weight.grad is None


def test_tied_head_gets_no_adapter():
    model, _ = load_model("tiny_llama")
    apply_lora(model)
    assert not hasattr(model.lm_head, "lora_A") and hasattr(model.model.layers[0].mlp.down_proj, "lora_A")
