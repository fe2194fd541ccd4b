"""From a search to a deployable model: GGUF files that read back to the sub-network's own weights (and, for
uniform sub-networks, compute its logits in transformers' GGUF loader), and `nas.pick` choosing the best
sub-network within a budget and stating the right numbers on its model card."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from test_search_job import base_overrides, compose_search
from transformers import AutoModelForCausalLM

from nas.export.gguf import export_gguf, from_interleaved_rope, gguf_tensors, read_gguf_weights, to_interleaved_rope
from nas.export.standalone import extract_state_dict
from nas.models.tiny import tiny_llama
from nas.stages.pick import PickError, deploy, format_size_gb
from nas.stages.search import run_search
from nas.supernet.metrics import sub_network_cost
from nas.supernet.subnetwork import SubNetwork

TOKENS = torch.tensor([[5, 17, 99, 3, 200, 41, 7, 66, 12, 250]])


@pytest.fixture(scope="module")
def tiny():
    return tiny_llama(num_layers=4, hidden_size=64, intermediate_size=128, num_heads=4, num_kv_heads=2, seed=0)


def test_rope_permutation_round_trips():
    weight = np.arange(8 * 64 * 3, dtype=np.float32).reshape(8 * 64 // 8, 3 * 8)
    assert np.array_equal(from_interleaved_rope(to_interleaved_rope(weight, 4), 4), weight)


@pytest.mark.parametrize(("weight_type", "atol"), [("f32", 1e-5), ("f16", 1e-4)])
def test_uniform_gguf_computes_the_sub_network_in_transformers(tmp_path, tiny, weight_type, atol):
    model, tokenizer = tiny
    sub = SubNetwork((0, 2, 3), (64, 64, 64), (2, 2, 2), 64)
    path = export_gguf(model, sub, tmp_path / "m.gguf", tokenizer, weight_type)
    with torch.no_grad(), model.sub_network(sub):
        if weight_type == "f16":  # the live sub-network with the file's rounding of its matrices
            saved = {n: p.detach().clone() for n, p in model.named_parameters()}
            for p in model.parameters():
                if p.dim() == 2:
                    p.copy_(p.half().float())
        live = model(TOKENS).logits
        if weight_type == "f16":
            for n, p in model.named_parameters():
                p.copy_(saved[n])
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name, dtype=torch.float32)
    assert loaded.config.num_hidden_layers == 3 and loaded.config.intermediate_size == 64
    with torch.no_grad():
        got = loaded(TOKENS).logits
    torch.testing.assert_close(got, live, atol=atol, rtol=0)


@pytest.mark.parametrize("weight_type", ["f32", "q8_0"])
def test_per_layer_gguf_reads_back_as_the_sub_network(tmp_path, tiny, weight_type):
    model, tokenizer = tiny
    sub = SubNetwork((0, 1, 3), (128, 64, 32), (4, 2, 4), 64)
    path = export_gguf(model, sub, tmp_path / "m.gguf", tokenizer, weight_type, pre_tokenizer="default")
    metadata, tensors = read_gguf_weights(path)
    assert metadata["general.architecture"] == "deci"
    assert metadata["deci.block_count"] == 3
    assert metadata["deci.feed_forward_length"] == [128, 64, 32]
    assert metadata["deci.attention.head_count"] == [4, 2, 4]
    assert metadata["deci.attention.head_count_kv"] == [2, 1, 2]
    assert metadata["tokenizer.ggml.model"] == "gpt2" and metadata["tokenizer.ggml.pre"] == "default"
    expected = gguf_tensors(model, sub)
    assert set(tensors) == set(expected)
    state = extract_state_dict(model, sub)
    # Read back and returned to Hugging Face order, the projections are the sub-network's own slices.
    q = tensors["blk.1.attn_q.weight"]
    assert q.shape == tuple(state["model.layers.1.self_attn.q_proj.weight"].shape) == (2 * 16, 64)
    for name, array in expected.items():
        back = tensors[name]
        if weight_type == "f32" or array.ndim == 1:
            np.testing.assert_array_equal(back, from_hf_order(name, array, sub))
        else:
            # q8_0: per 32 weights, 8-bit multiples of a step amax / 127 stored as f16: half a step of rounding,
            # plus up to 127 steps times the f16 step's relative error (2^-11).
            ref = from_hf_order(name, array, sub)
            step = np.abs(ref.reshape(-1, 32)).max(axis=1, keepdims=True) / 127.0
            assert (np.abs(back - ref).reshape(-1, 32) <= step * (0.5 + 127 * 2.0**-11) + 1e-7).all(), name


def from_hf_order(name: str, array: np.ndarray, sub: SubNetwork) -> np.ndarray:
    """GGUF-ordered queries/keys back in Hugging Face order (what `read_gguf_weights` returns)."""
    parts = name.split(".")
    if parts[0] == "blk" and parts[2] in ("attn_q", "attn_k"):
        layer = int(parts[1])
        heads = sub.num_heads[layer] if parts[2] == "attn_q" else sub.num_heads[layer] // 2
        return from_interleaved_rope(array, heads)
    return array


# --- nas.pick ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pick")
    cfg = compose_search([*base_overrides(tmp), "search=random", "search.n_trials=10"])
    run_search(cfg, tmp / "run")
    return tmp / "run", cfg.model


def pick_settings(**changes):
    settings = {
        "budget": {},
        "metric": "perplexity",
        "format": "hf",
        "dtype": "float32",
        "size_dtype": None,
        "gguf": {"type": "q8_0", "pre_tokenizer": None},
        "max_timed": 20,
        "quantization": None,
        "speed": {
            "_target_": "nas.evaluation.speed.ThroughputMeter",
            "batch_size": 1,
            "prompt_len": 8,
            "new_tokens": 2,
            "warmup": 0,
            "repeats": 1,
        },
        "overwrite": False,
    }
    return OmegaConf.create(settings | changes)


def trials(run_dir):
    rows = [r for r in csv.DictReader((run_dir / "trials.csv").open()) if r["evaluated"] == "True"]
    return [(int(r["number"]), float(r["perplexity"]), int(float(r["params"]))) for r in rows]


def test_pick_chooses_the_best_trial_within_the_budget_and_states_it(tmp_path, searched):
    run_dir, model_cfg = searched
    evaluated = trials(run_dir)
    limit = sorted(p for _, _, p in evaluated)[len(evaluated) // 2]  # half of them fit
    expected = min((t for t in evaluated if t[2] <= limit), key=lambda t: (t[1], t[0]))
    out = tmp_path / "deploy"
    record = deploy(pick_settings(budget={"params": limit}), run_dir, out, model_cfg)
    assert record["chosen"]["trial"] == expected[0]
    assert record["chosen"]["params"] == expected[2] <= limit
    assert all(c["params"] > limit for c in record["candidates"] if c["verdict"].startswith("over budget"))
    # A standalone model of the chosen sub-network, with its card and the decision record.
    assert (out / "model.safetensors").is_file() and (out / "pick.json").is_file()
    card = (out / "README.md").read_text()
    assert f"Parameters: {expected[2]:,}." in card
    assert f"trial {expected[0]}" in card
    assert "search items" in card and "optimistic" in card  # no confirmation: said so
    sub = SubNetwork.from_dict(json.loads((out / "subnetwork.json").read_text())["sub_network"])
    model, _ = tiny_llama()
    assert sub_network_cost(model.shape, sub).params == expected[2]
    assert f"| bf16 | {format_size_gb(model.shape, sub, 'bf16') * 1000:.1f} |" in card
    speed = record["chosen"]["latency_ms"]
    assert speed is not None and f"{speed:.2f} ms per decode step" in card


def test_pick_measures_latency_and_exports_gguf(tmp_path, searched):
    run_dir, model_cfg = searched
    out = tmp_path / "deploy"
    record = deploy(pick_settings(budget={"latency_ms": 1e6}, format="gguf"), run_dir, out, model_cfg)
    assert record["chosen"]["latency_ms"] < 1e6
    assert (out / "model-q8_0.gguf").is_file() and "GGUF q8_0" in (out / "README.md").read_text()


def test_an_impossible_budget_exports_nothing(tmp_path, searched):
    run_dir, model_cfg = searched
    out = tmp_path / "deploy"
    with pytest.raises(PickError, match="No evaluated sub-network meets the budget.*smallest evaluated"):
        deploy(pick_settings(budget={"params": 10}), run_dir, out, model_cfg)
    assert not out.exists()
    with pytest.raises(PickError, match="budget keys"):
        deploy(pick_settings(budget={"size_mb": 10}), run_dir, out, model_cfg)
