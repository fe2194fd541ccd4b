"""Export: the standalone model equals the live sub-network, and loads without this project."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from nas import SubNetwork, export_sub_network, load_model, sub_network_cost
from nas.errors import InvalidSubNetworkError

# Uniform with dropped layers, fewer heads and a narrower residual stream; then per-layer sizes with
# the first layer dropped.
UNIFORM = SubNetwork((0, 2, 3), (64, 64, 64), (2, 2, 2), 48)
HETERO = SubNetwork((1, 3), (32, 128), (4, 2), 48)

# Runs in a fresh interpreter where importing the project fails, so the folder must stand alone.
LOAD_WITHOUT_PROJECT = textwrap.dedent(
    """
    import json, sys
    sys.modules["nas"] = None  # `import nas` now raises ImportError
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    folder, ids_file, out_file = sys.argv[1:4]
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    AutoTokenizer.from_pretrained(folder)
    ids = torch.load(ids_file)
    with torch.no_grad():
        logits = model(ids).logits
        generated = model.generate(ids, max_new_tokens=5, do_sample=False)
    torch.save({"logits": logits, "generated": generated, "class": type(model).__name__,
                "params": sum(p.numel() for p in model.parameters())}, out_file)
    """
)


def load_in_clean_process(folder: Path, ids: torch.Tensor, tmp_path: Path) -> dict:
    torch.save(ids, tmp_path / "ids.pt")
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "hf_modules"), "HF_HUB_OFFLINE": "1"}
    subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_PROJECT, str(folder), str(tmp_path / "ids.pt"), str(tmp_path / "out.pt")],
        check=True,
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    return torch.load(tmp_path / "out.pt")


def live_and_exported(model, tokenizer, sub: SubNetwork, ids: torch.Tensor, tmp_path: Path):
    """The live sub-network's logits and greedy continuation, and its export loaded in a clean process."""
    with torch.no_grad(), model.sub_network(sub):
        live_logits = model(ids).logits
        live_generated = model.generate(ids, max_new_tokens=5, do_sample=False)
    loaded = load_in_clean_process(export_sub_network(model, sub, tmp_path / "e", tokenizer=tokenizer), ids, tmp_path)
    return live_logits, live_generated, loaded


@pytest.mark.parametrize(("sub", "expected_class"), [(UNIFORM, "LlamaForCausalLM"), (HETERO, "NasLlamaForCausalLM")])
def test_export_equals_live_sub_network(tiny, tiny_inputs, tmp_path, sub, expected_class):
    model, tokenizer = tiny
    ids = tiny_inputs["input_ids"][:1]
    with torch.no_grad(), model.sub_network(sub):
        live_logits = model(ids).logits
        live_generated = model.generate(ids, max_new_tokens=5, do_sample=False)
    folder = export_sub_network(model, sub, tmp_path / "export", tokenizer=tokenizer)

    loaded = load_in_clean_process(folder, ids, tmp_path)

    assert loaded["class"] == expected_class
    assert (loaded["logits"] - live_logits).abs().max().item() <= 1e-4
    assert torch.equal(loaded["generated"], live_generated)
    assert loaded["params"] == sub_network_cost(model.shape, sub).params
    assert SubNetwork.from_dict(json.loads((folder / "subnetwork.json").read_text())["sub_network"]) == sub
    assert (folder / "modeling_nas_llama.py").exists() == (not sub.is_uniform)
    assert model.active_sub_network is None  # exporting leaves the super-network as it was


def test_export_honours_the_layer_order_of_a_reordered_model(tiny_inputs, tmp_path):
    from nas import SearchSpace, load_model
    from nas.data.calibration import CalibrationSet
    from nas.models.pretrained import from_pretrained
    from nas.stages.reorder import reorder_model, save_reordered

    # Importance reordering: neurons, heads and channels permuted, layers left in place and ranked in
    # config.nas_layer_order; saved and loaded again, as `nas.stages.reorder` then `nas.export` would. In a random
    # model earlier layers change the hidden state most (order 0, 1, 2, 3); layer 1, made to change it
    # little, ranks last.
    model, tokenizer = load_model("tiny_llama")
    with torch.no_grad():
        for name in ("self_attn.o_proj", "mlp.down_proj"):
            model.model.layers[1].get_submodule(name).weight.mul_(0.01)
    original = copy.deepcopy(model)
    calibration = CalibrationSet(num_samples=4, seq_len=64, batch_size=4)  # the C4 sample of the data folder
    scores, permutations = reorder_model(model, tokenizer, calibration, progress=False)
    order = list(model.config.nas_layer_order)
    reloaded, tokenizer = from_pretrained(str(save_reordered(model, tokenizer, tmp_path / "r", scores, permutations)))
    assert reloaded.config.nas_layer_order == order

    # A sub-network with fewer layers keeps the most important ones, by the stored order.
    space = SearchSpace.from_config({"num_layers": {"choices": [0.5, 1.0]}}, reloaded.config)
    sub = space.decode({"num_layers": 2})
    assert order[-1] == 1 and sub.layers == tuple(sorted(order[:2])) != (0, 1)
    ids = tiny_inputs["input_ids"][:1]
    with torch.no_grad(), reloaded.sub_network(sub):
        live = reloaded(ids).logits
    folder = export_sub_network(reloaded, sub, tmp_path / "export", tokenizer=tokenizer)
    assert "nas_layer_order" not in json.loads((folder / "config.json").read_text())

    loaded = load_in_clean_process(folder, ids, tmp_path)

    assert (loaded["logits"] - live).abs().max().item() <= 1e-4
    assert loaded["params"] == sub_network_cost(reloaded.shape, sub).params
    # Those are the same layers of the model as it was before reordering (the permutation kept the function).
    with torch.no_grad(), original.sub_network(sub):
        torch.testing.assert_close(loaded["logits"], original(ids).logits, atol=1e-4, rtol=0)


def test_export_of_untied_model(tiny_untied, tmp_path):
    model, tokenizer = tiny_untied
    ids = tokenizer(["untied heads export too"], return_tensors="pt").input_ids
    with torch.no_grad(), model.sub_network(HETERO):
        live = model(ids).logits
    loaded = load_in_clean_process(
        export_sub_network(model, HETERO, tmp_path / "e", tokenizer=tokenizer), ids, tmp_path
    )
    assert (loaded["logits"] - live).abs().max().item() <= 1e-4
    assert loaded["params"] == sub_network_cost(model.shape, HETERO).params


def test_export_in_bf16_halves_the_file(tiny, tmp_path):
    model, _ = tiny
    fp32 = export_sub_network(model, UNIFORM, tmp_path / "fp32")
    bf16 = export_sub_network(model, UNIFORM, tmp_path / "bf16", dtype=torch.bfloat16)
    ratio = (bf16 / "model.safetensors").stat().st_size / (fp32 / "model.safetensors").stat().st_size
    assert 0.49 < ratio < 0.51
    assert json.loads((bf16 / "config.json").read_text())["dtype"] == "bfloat16"


def test_invalid_sub_network_writes_nothing(tiny, tmp_path):
    model, _ = tiny
    with pytest.raises(InvalidSubNetworkError, match="hidden_size = 99"):
        export_sub_network(model, SubNetwork((0,), (8,), (2,), 99), tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


@pytest.fixture(scope="module", params=["qwen2", "mistral"])
def tiny_family(request):
    """Qwen2 (biased q/k/v; layers 0-1 full attention, 2-3 a 4-token window) or Mistral (all layers a
    4-token window); windows shorter than the inputs, so a kept layer given another layer's mask shows."""
    return load_model("tiny_llama", architecture=request.param, sliding_window=4)


@pytest.mark.parametrize("sub", [UNIFORM, HETERO], ids=["uniform", "heterogeneous"])
def test_qwen2_and_mistral_export_equals_live_sub_network(tiny_family, tmp_path, sub):
    model, tokenizer = tiny_family
    ids = tokenizer(["Windows, biases and dropped layers."], return_tensors="pt").input_ids
    live_logits, live_generated, loaded = live_and_exported(model, tokenizer, sub, ids, tmp_path)

    base = {"qwen2": "Qwen2ForCausalLM", "mistral": "MistralForCausalLM"}[model.config.model_type]
    assert loaded["class"] == (base if sub.is_uniform else f"Nas{base}")
    assert (loaded["logits"] - live_logits).abs().max().item() <= 1e-4
    assert torch.equal(loaded["generated"], live_generated)
    assert loaded["params"] == sub_network_cost(model.shape, sub).params


# Heterogeneous: three layers dropped, per-layer MLP widths and heads. Uniform: the last six layers
# dropped, every kept layer with half the MLP and two of three KV groups.
SMOLLM2_HETERO = SubNetwork(
    tuple(i for i in range(30) if i not in (3, 17, 29)),
    tuple(768 if i % 3 else 1536 for i in range(30) if i not in (3, 17, 29)),
    tuple(6 if i % 2 else 9 for i in range(30) if i not in (3, 17, 29)),
    576,
)
SMOLLM2_UNIFORM = SubNetwork(tuple(range(24)), (768,) * 24, (6,) * 24, 576)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sub", "expected_class"),
    [(SMOLLM2_HETERO, "NasLlamaForCausalLM"), (SMOLLM2_UNIFORM, "LlamaForCausalLM")],
    ids=["heterogeneous", "uniform"],
)
def test_smollm2_export_equals_live_sub_network(smollm2, tmp_path, sub, expected_class):
    model, tokenizer = smollm2
    ids = tokenizer(["The capital of France is Paris. The capital of Italy is"], return_tensors="pt").input_ids
    live_logits, live_generated, loaded = live_and_exported(model, tokenizer, sub, ids, tmp_path)
    assert loaded["class"] == expected_class
    assert (loaded["logits"] - live_logits).abs().max().item() <= 1e-4
    assert torch.equal(loaded["generated"], live_generated)
    assert loaded["params"] == sub_network_cost(model.shape, sub).params
