"""The evaluation's own decoder pass (`scored_pass`) against transformers' decoder on the same live sub-networks:
the same hidden states at the scored positions, with and without a lent prefix, for Llama, Mistral and Qwen2;
the last layer's MLP run on the scored positions only; models it does not cover keep transformers' forward."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from nas import load_model
from nas.evaluation import loglikelihood
from nas.evaluation.batching import Batch, make_batches
from nas.evaluation.packing import pack, split_group_prefix
from nas.evaluation.requests import EncodedRequest
from nas.evaluation.scored_pass import KEY_ALIGN, key_gap, scored_hidden_states, supports_scored_pass
from nas.supernet.subnetwork import SubNetwork

SUBS = {
    "full": None,
    "dropped layers, narrow MLPs, fewer heads": SubNetwork((0, 2, 3), (64, 128, 32), (2, 4, 2), 64),
    "narrow residual stream": SubNetwork((1, 3), (96, 128), (4, 4), 48),
    "one layer": SubNetwork((2,), (128,), (4,), 64),
}


def documents(seed: int, vocab: int, lengths: tuple[int, ...] = (1, 1, 4)) -> list[list[EncodedRequest]]:
    """Documents of 1-4 requests after a shared opening, each continuation of one of `lengths` tokens (one-token
    choices like MMLU's, longer ones like ARC's)."""
    rng = random.Random(seed)
    opening = [rng.randrange(3, vocab) for _ in range(12)]
    docs = []
    for _ in range(9):
        context = opening + [rng.randrange(3, vocab) for _ in range(rng.randrange(2, 30))]
        choices = [[rng.randrange(3, vocab) for _ in range(rng.choice(lengths))] for _ in range(rng.randrange(1, 5))]
        docs.append([EncodedRequest(tuple((context + c)[:-1]), tuple(c)) for c in choices])  # as `RequestEncoder`
    return docs


def batches_of(docs: list[list[EncodedRequest]], with_prefix: bool) -> list[Batch]:
    rows = [pack(requests) for requests in docs]
    offsets = list(np.cumsum([0] + [len(r) for r in docs[:-1]]))
    prefix, rows = split_group_prefix(rows, min_length=8) if with_prefix else ((), rows)
    assert bool(prefix) == with_prefix
    return make_batches(rows, offsets, batch_tokens=96, prefix=prefix)


def transformers_hidden(model, batch: Batch, mask: torch.Tensor, kv) -> torch.Tensor:
    lent = loglikelihood._lent(model, kv, batch)
    return loglikelihood._scored_hidden(model, batch, mask, lent)


@pytest.mark.parametrize("architecture", ["llama", "mistral", "qwen2"])
@pytest.mark.parametrize("with_prefix", [False, True])
def test_scored_pass_gives_the_decoders_hidden_states(architecture, with_prefix):
    model, _ = load_model("tiny_llama", architecture=architecture, seed=3)
    assert supports_scored_pass(model)
    batches = batches_of(documents(seed=len(architecture), vocab=model.config.vocab_size), with_prefix)
    assert len(batches) > 2 and any(len(b.hidden_index) < b.input_ids.numel() for b in batches)
    # Closed keys round every batch's key length up; some batches need them.
    assert any(key_gap(b) for b in batches)
    assert all((b.prefix_length + key_gap(b) + b.input_ids.shape[1]) % KEY_ALIGN == 0 for b in batches)
    for name, sub in SUBS.items():
        with torch.inference_mode(), model.sub_network(sub) if sub is not None else torch.no_grad():
            kv = loglikelihood._prefix_kv(model, batches[0].prefix) if with_prefix else None
            for batch in batches:
                mask = batch.attention_mask(torch.float32)
                ours = scored_hidden_states(model, batch, kv)
                theirs = transformers_hidden(model, batch, mask, kv)
                assert ours.shape == theirs.shape
                torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5, msg=f"{architecture}, {name}")


def test_every_position_scored_like_a_rolling_window():
    """WikiText's windows score every position: the last layer then runs on all of them, still exactly placed."""
    model, _ = load_model("tiny_llama", seed=4)
    rng = random.Random(0)
    windows = [
        EncodedRequest(tuple(tokens[:-1]), tuple(tokens[1:]))
        for tokens in ([rng.randrange(3, 200) for _ in range(n)] for n in (40, 33, 17))
    ]
    rows = [pack([w]) for w in windows]
    (batch,) = make_batches(rows, [0, 1, 2], batch_tokens=1000, forward_cost=1000)  # one padded batch
    assert len(batch.hidden_index) == sum(len(w.inputs) for w in windows)  # every position
    with torch.inference_mode(), model.sub_network(SUBS["dropped layers, narrow MLPs, fewer heads"]):
        mask = batch.attention_mask(torch.float32)
        torch.testing.assert_close(
            scored_hidden_states(model, batch, None), transformers_hidden(model, batch, mask, None)
        )


def test_last_layer_runs_its_mlp_on_the_scored_positions_only():
    model, _ = load_model("tiny_llama", seed=5)
    batch = batches_of(documents(seed=1, vocab=model.config.vocab_size, lengths=(1,)), with_prefix=False)[0]
    rows_seen: dict[str, int] = {}
    hooks = [
        layer.mlp.down_proj.register_forward_hook(
            lambda module, args, out, i=i: rows_seen.__setitem__(f"layer {i}", args[0].flatten(0, -2).shape[0])
        )
        for i, layer in enumerate(model.model.layers)
    ]
    try:
        with torch.inference_mode():
            scored_hidden_states(model, batch, None)
    finally:
        for hook in hooks:
            hook.remove()
    padded = batch.input_ids.numel()
    assert rows_seen == {"layer 0": padded, "layer 1": padded, "layer 2": padded, "layer 3": len(batch.hidden_index)}
    assert len(batch.hidden_index) == batch.input_ids.shape[0]  # one-token choices: one scored position per row


def test_bfloat16_stays_within_its_rounding():
    model, _ = load_model("tiny_llama", seed=6, dtype="bfloat16")
    batch = batches_of(documents(seed=2, vocab=model.config.vocab_size), with_prefix=False)[0]
    with torch.inference_mode():
        mask = batch.attention_mask(torch.bfloat16)
        ours = scored_hidden_states(model, batch, None).float()
        theirs = transformers_hidden(model, batch, mask, None).float()
    torch.testing.assert_close(ours, theirs, rtol=0.05, atol=0.05)


def test_models_it_does_not_cover_keep_transformers_forward(monkeypatch):
    """Eager attention (float32 softmax in any dtype) and wrapped layers: the decoder's own forward, same scores."""
    model, _ = load_model("tiny_llama", seed=7)
    assert supports_scored_pass(model)
    model.config._attn_implementation = "eager"
    assert not supports_scored_pass(model)
    model.config._attn_implementation = "sdpa"
    layers = model.model.layers
    original = layers[1]
    wrapper = torch.nn.Sequential(original)
    layers._modules["1"] = wrapper
    try:
        assert not supports_scored_pass(model)
    finally:
        layers._modules["1"] = original
    assert supports_scored_pass(model)

    docs = documents(seed=3, vocab=model.config.vocab_size)
    batches = batches_of(docs, with_prefix=True)
    requests = sum(len(d) for d in docs)
    fast = loglikelihood.score_batches(model, batches, requests, progress=False)
    calls: list[int] = []
    monkeypatch.setattr(loglikelihood, "supports_scored_pass", lambda model: False)
    monkeypatch.setattr(loglikelihood, "scored_hidden_chunk", lambda *args: calls.append(1))
    slow = loglikelihood.score_batches(model, batches, requests, progress=False)
    assert not calls
    np.testing.assert_allclose(fast[0], slow[0], rtol=1e-6, atol=1e-5)
    assert (fast[1] == slow[1]).all()
